"""Verify any flow layer or density model -- ours, a user's, or another library's -- against its
dense Jacobian, from Python, from pytest (the ``flow_checker`` fixture) and from the command line
(``invconv-verify --layer MODULE:FACTORY``). docs/testing.md is the guide.

- :func:`check_flow_layer` (layer, example) -> :class:`Report`: inverse consistency, each
  direction's log-det against ``slogdet`` of the dense Jacobian per sample, the two directions'
  log-dets opposite, batch independence, gradcheck, finite outputs.
- :func:`check_flow_model` (model, example) -> :class:`Report`: the whole density against the
  dense Jacobian plus the prior (itself checked against torch.distributions), the sampling path
  inverting the map, and the 1-bit/dim entropy bound.
- :data:`PROTOCOLS`: how the layers of invconv_core, nflows, normflows, zuko and FrEIA are
  called, and the direction and sign of each one's log-det.
- ``invconv_core.testing.strategies``: Hypothesis strategies for ``inv_conv2d``'s operands
  (imports hypothesis; not imported here).
"""

from .adapters import PROTOCOLS, LayerAdapter, ModelAdapter, detect_protocol, layer_adapter, model_adapter
from .checks import (DENSE_LIMIT, CheckResult, ExampleTooLarge, FlowCheckError, Report, check_flow_layer,
                     check_flow_model, entropy_bound, tolerance)

__all__ = ["check_flow_layer", "check_flow_model", "entropy_bound", "Report", "CheckResult", "FlowCheckError",
           "ExampleTooLarge", "DENSE_LIMIT", "tolerance", "PROTOCOLS", "detect_protocol", "layer_adapter",
           "model_adapter", "LayerAdapter", "ModelAdapter"]
