"""Drawing images from a flow: :func:`sample` (a model in, images out) and :func:`load_flow`
(a checkpoint written by :func:`invconv_core.flows.fit` in, a model out)."""

from __future__ import annotations

import torch

from .checkpoints import load_flow
from .models import MultiScaleFlow
from .validate import require_float, require_int

__all__ = ["sample", "load_flow"]


def sample(model: MultiScaleFlow, n: int, temperature: float = 0.8, seed: int | None = None) -> torch.Tensor:
    """``n`` images (n, C, H, W) in [0, 1] drawn through the latent→data pass at ``temperature``
    (the prior's standard deviation is scaled by it), on the model's device. With ``seed`` the
    draw is reproducible and leaves the global random state untouched."""
    require_int("n", n, 1)
    require_float("temperature", temperature, 0.0)
    was_training = model.training
    model.eval()
    try:
        if seed is None:
            return model.sample(n, temperature)
        device = next(model.parameters()).device
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return model.sample(n, temperature)
    finally:
        model.train(was_training)
