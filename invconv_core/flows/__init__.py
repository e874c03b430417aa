"""Normalizing flows built on invconv_core: layers, models, data and training entry points.

Direction and sign convention: ``forward(x) -> (z, logabsdet)`` maps data → latent with
``logabsdet = log|det ∂z/∂x|``; ``inverse(z) -> (x, logabsdet)`` maps latent → data with the
negated log-det.
"""

from .bpd import bits_per_dim, dequantize, quantize
from .layers import (ActNorm, AffineCoupling, Conv1x1, FlowSequence, InvConv2d, LogitTransform,
                     ReverseChannels, Squeeze)
from .models import MODELS, FlowConfig, MultiScaleFlow, build_flow

__all__ = ["ActNorm", "AffineCoupling", "Conv1x1", "FlowSequence", "InvConv2d", "LogitTransform",
           "ReverseChannels", "Squeeze", "MODELS", "FlowConfig", "MultiScaleFlow", "build_flow", "bits_per_dim",
           "dequantize", "quantize"]
