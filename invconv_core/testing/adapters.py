"""Protocol adapters: one calling convention for the flow layers and models of invconv_core and
of the libraries our users combine it with, so that one checker serves them all.

A :class:`LayerAdapter` exposes a layer as two maps, each returning ``(output, logabsdet)`` with
``logabsdet`` of shape (N,) = log|det ∂output/∂input| of *that* map, per sample:

- ``forward``: the map the library calls the layer's forward direction;
- ``inverse``: its inverse.

Which of the two is data→latent differs between libraries (normflows' ``forward`` is the
sampling direction); the checks do not depend on it, and :data:`PROTOCOLS` states it for each
library (docs/testing.md has the same table). A :class:`ModelAdapter` exposes a whole density
model as its data→latent map, its prior and its sampler.

Nothing here imports a peer library: a protocol is detected from the module path of the
object's class, so the package never depends on zuko, nflows, normflows or FrEIA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

__all__ = ["PROTOCOLS", "Protocol", "LayerAdapter", "ModelAdapter", "detect_protocol",
           "layer_adapter", "model_adapter"]


@dataclass(frozen=True)
class Protocol:
    """How one library's layers are called, and what their two directions mean."""
    name: str
    call: str          # how the forward map is called
    inverse: str       # how the inverse map is called
    forward_is: str    # which direction the library's forward map goes
    logdet: str        # what the returned log-det is


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol("invconv", "layer(x) -> (z, logabsdet)", "layer.inverse(z) -> (x, logabsdet)",
             "data → latent", "log|det| of the map called, per sample (N,)"),
    Protocol("nflows", "layer(x, context=None) -> (z, logabsdet)",
             "layer.inverse(z, context=None) -> (x, logabsdet)",
             "data → latent (nflows.Flow.log_prob calls the transform forward)",
             "log|det| of the map called, per sample (N,)"),
    Protocol("normflows", "layer(z) -> (x, log_det)", "layer.inverse(x) -> (z, log_det)",
             "latent → data (NormalizingFlow.log_prob calls the layers' inverse)",
             "log|det| of the map called, per sample (N,) or one scalar for all samples"),
    Protocol("zuko", "t = module(); y = t(x); t.log_abs_det_jacobian(x, y)",
             "t.inv(y); t.inv.log_abs_det_jacobian(y, x)",
             "data → latent (NormalizingFlow.log_prob applies the transform to x)",
             "log|det| of the map called, summed here over the event dimensions left unsummed"),
    Protocol("freia", "module([x], rev=False, jac=True) -> ((z,), log_jac_det)",
             "module([z], rev=True, jac=True) -> ((x,), log_jac_det)",
             "data → latent", "log|det| of the map called (rev=True returns the inverse's), per sample (N,)"),
)}

_LIBRARY_OF_MODULE = {"nflows": "nflows", "normflows": "normflows", "zuko": "zuko", "FrEIA": "freia",
                      "invconv_core": "invconv"}


def detect_protocol(obj) -> str:
    """The protocol of a layer or model, from the package its class (or a base class) is
    defined in; a ``torch.distributions.Transform`` is zuko's protocol, and any other module
    with an ``inverse`` method is taken to follow ours. ValueError when none applies."""
    for cls in type(obj).__mro__:
        top = cls.__module__.split(".")[0]
        if top in _LIBRARY_OF_MODULE:
            return _LIBRARY_OF_MODULE[top]
    if isinstance(obj, torch.distributions.Transform):
        return "zuko"
    if callable(getattr(obj, "inverse", None)):
        return "invconv"
    raise ValueError(f"protocol: cannot tell how to call {type(obj).__name__} (no inverse method, "
                     f"not a torch.distributions.Transform); pass protocol= one of {', '.join(PROTOCOLS)}")


def _per_sample(logdet, n: int, dtype, device) -> torch.Tensor:
    """A log-det as returned (a number, a scalar tensor, (N,) or per-element (N, ...)) → (N,).
    A per-element log-det (an element-wise zuko transform with no event dimension) is summed
    over everything but the batch; a scalar is the same for every sample."""
    if not torch.is_tensor(logdet):
        logdet = torch.as_tensor(logdet, dtype=dtype, device=device)
    if logdet.dim() == 0:
        return logdet.expand(n)
    if logdet.shape[0] != n:
        raise ValueError(f"the log-det has shape {tuple(logdet.shape)}: expected ({n},), one value per sample")
    return logdet.reshape(n, -1).sum(1) if logdet.dim() > 1 else logdet


class LayerAdapter:
    """A layer as two maps ``forward(x)`` and ``inverse(z)``, each → (output, logabsdet (N,)).
    ``module`` is what gets copied, converted to the checked dtype and perturbed (the layer
    itself, or the nn.Module behind a zuko transform); ``has_inverse`` is False for a layer
    whose inverse is not implemented (only its forward is checked)."""

    def __init__(self, module, protocol: str,
                 forward: Callable[[torch.Tensor], tuple], inverse: Callable[[torch.Tensor], tuple] | None):
        self.module, self.protocol = module, protocol
        self._forward, self._inverse = forward, inverse

    @property
    def has_inverse(self) -> bool:
        return self._inverse is not None

    def map(self, direction: str) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        fn = self._forward if direction == "forward" else self._inverse

        def call(x):
            out, ld = fn(x)
            return out, _per_sample(ld, x.shape[0], out.dtype, out.device)
        return call


def _has_own_inverse(module, base_names=("Flow", "Transform", "FlowLayer")) -> bool:
    """Whether ``module.inverse`` is implemented by the layer (not the base class's stub that
    raises NotImplementedError)."""
    for cls in type(module).__mro__:
        if "inverse" in vars(cls):
            return cls.__name__ not in base_names
    return False


def layer_adapter(layer, protocol: str = "auto") -> LayerAdapter:
    """The adapter of ``layer`` for ``protocol`` (one of :data:`PROTOCOLS`, or "auto": detected
    by :func:`detect_protocol`)."""
    if protocol == "auto":
        protocol = detect_protocol(layer)
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be auto or one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if protocol in ("invconv", "normflows"):
        inverse = layer.inverse if _has_own_inverse(layer) else None
        return LayerAdapter(layer, protocol, layer, inverse)
    if protocol == "nflows":
        inverse = layer.inverse if _has_own_inverse(layer) else None
        return LayerAdapter(layer, protocol, lambda x: layer(x, context=None),
                            None if inverse is None else (lambda z: layer.inverse(z, context=None)))
    if protocol == "zuko":
        # a lazy transform (an nn.Module returning a Transform) is re-evaluated on every call, so
        # the transform is rebuilt from the (converted, perturbed) parameters
        transform = (lambda: layer()) if isinstance(layer, nn.Module) else (lambda: layer)

        def forward(x):
            t = transform()
            if hasattr(t, "call_and_ladj"):
                return t.call_and_ladj(x)
            y = t(x)
            return y, t.log_abs_det_jacobian(x, y)

        def inverse(y):
            t = transform().inv
            x = t(y)
            return x, t.log_abs_det_jacobian(y, x)
        return LayerAdapter(layer, protocol, forward, inverse)
    # FrEIA: a SequenceINN takes a tensor; every other invertible module a list of tensors
    takes_list = type(layer).__name__ != "SequenceINN"

    def run(x, rev):
        out, ljd = layer([x] if takes_list else x, rev=rev, jac=True)
        return (out[0] if takes_list else out), ljd
    return LayerAdapter(layer, protocol, lambda x: run(x, False), lambda z: run(z, True))


class ModelAdapter:
    """A density model as: ``to_latent(x) -> (z (N, D), logabsdet (N,))`` (data → latent, all
    latents flattened and concatenated), ``to_data(z) -> x`` (its inverse, the sampling path),
    ``log_prob(x)`` (the model's own density, (N,)), ``prior_log_prob(x, z)`` (the model's own
    prior term, (N,)), ``reference_prior_log_prob(x, z)`` (the same written with
    torch.distributions from the prior's parameters, or None where the prior is not Gaussian)
    and ``sample(n) -> x`` (the model's own sampler, unclamped)."""

    def __init__(self, module, protocol, to_latent, to_data, log_prob, prior_log_prob,
                 reference_prior_log_prob, sample):
        self.module, self.protocol = module, protocol
        self.to_latent, self.to_data, self.log_prob = to_latent, to_data, log_prob
        self.prior_log_prob, self.reference_prior_log_prob = prior_log_prob, reference_prior_log_prob
        self.sample = sample


def _normal_log_prob(z, loc, scale) -> torch.Tensor:
    """Σ log N(z; loc, scale) per sample, by torch.distributions."""
    lp = torch.distributions.Normal(loc, scale).log_prob(z)
    return lp.reshape(z.shape[0], -1).sum(1)


def _invconv_model(model) -> ModelAdapter:
    from ..flows.models import MultiScaleFlow
    if not isinstance(model, MultiScaleFlow):
        raise ValueError(f"protocol invconv: a model must be a MultiScaleFlow, got {type(model).__name__}")

    def to_latent(x):
        zs, logdet, _ = model.encode(x)
        return torch.cat([z.reshape(len(x), -1) for z in zs], 1), logdet

    def to_data(z):
        zs, start = [], 0
        for shape in model.latent_shapes():
            n = int(torch.Size(shape).numel())
            zs.append(z[:, start:start + n].reshape(len(z), *shape))
            start += n
        return model.decode(zs)

    def reference(x, z):
        return sum(_normal_log_prob(zi, mean, torch.exp(logs)) for zi, mean, logs in model.latent_priors(x))

    return ModelAdapter(model, "invconv", to_latent, to_data, model,
                        lambda x, z: model.encode(x)[2], reference,
                        lambda n: model.decode(None, n))


def _nflows_model(model) -> ModelAdapter:
    transform, base = model._transform, model._distribution

    def reference(x, z):
        if type(base).__name__ == "StandardNormal":
            return _normal_log_prob(z, torch.zeros_like(z), torch.ones_like(z))
        return None

    shape = {}

    def to_data(z):
        return transform.inverse(z.reshape(len(z), *shape.get("z", z.shape[1:])), context=None)[0]

    def to_latent(x):
        z, ld = transform(x, context=None)
        shape["z"] = z.shape[1:]
        return z.reshape(len(x), -1), ld

    return ModelAdapter(model, "nflows", to_latent, to_data, lambda x: model.log_prob(x),
                        lambda x, z: base.log_prob(z.reshape(len(z), *shape.get("z", z.shape[1:]))),
                        reference, lambda n: model.sample(n))


def _normflows_model(model) -> ModelAdapter:
    flows, q0 = model.flows, model.q0
    shape = {}

    def to_latent(x):
        z, total = x, torch.zeros(len(x), dtype=x.dtype, device=x.device)
        for flow in reversed(flows):
            z, ld = flow.inverse(z)
            total = total + _per_sample(ld, len(x), x.dtype, x.device)
        shape["z"] = z.shape[1:]
        return z.reshape(len(x), -1), total

    def to_data(z):
        x = z.reshape(len(z), *shape.get("z", z.shape[1:]))
        for flow in flows:
            x, _ = flow(x)
        return x

    def reference(x, z):
        if hasattr(q0, "loc") and hasattr(q0, "log_scale"):
            zz = z.reshape(len(z), *shape["z"])
            return _normal_log_prob(zz, q0.loc.expand_as(zz), torch.exp(q0.log_scale).expand_as(zz))
        return None

    return ModelAdapter(model, "normflows", to_latent, to_data, lambda x: model.log_prob(x),
                        lambda x, z: q0.log_prob(z.reshape(len(z), *shape["z"])), reference,
                        lambda n: model.sample(n)[0])


def _zuko_model(model) -> ModelAdapter:
    dist = (lambda: model()) if isinstance(model, nn.Module) else (lambda: model)

    def to_latent(x):
        z, ld = dist().transform.call_and_ladj(x)
        return z.reshape(len(x), -1), _per_sample(ld, len(x), x.dtype, x.device)

    def to_data(z):
        return dist().transform.inv(z)

    def reference(x, z):
        base = dist().base
        normal = getattr(base, "base_dist", base)
        if isinstance(normal, torch.distributions.Normal):
            return _normal_log_prob(z, normal.loc.expand_as(z), normal.scale.expand_as(z))
        return None

    return ModelAdapter(model, "zuko", to_latent, to_data, lambda x: dist().log_prob(x),
                        lambda x, z: dist().base.log_prob(z), reference,
                        lambda n: dist().sample((n,)))


def model_adapter(model, protocol: str = "auto") -> ModelAdapter:
    """The adapter of a whole density model: our MultiScaleFlow, an nflows ``Flow``, a normflows
    ``NormalizingFlow`` or a zuko ``Flow`` (FrEIA has no model class with a prior)."""
    if protocol == "auto":
        protocol = detect_protocol(model)
    makers = {"invconv": _invconv_model, "nflows": _nflows_model, "normflows": _normflows_model,
              "zuko": _zuko_model}
    if protocol not in makers:
        raise ValueError(f"protocol for a model must be auto or one of {', '.join(makers)}, got {protocol!r}")
    return makers[protocol](model)
