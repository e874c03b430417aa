r"""Glow-like multi-scale flows from one builder: Inverse-Flow and its baselines.

Architecture (L levels × K steps): squeeze → K flow steps → split prior (half the channels
factored out, Gaussian conditioned on the rest), with a learned Gaussian prior on what is left
after the last level. Each model builds its step as published (data→latent order):

    inverse-flow  InvConv2d (inverse placement) → ActNorm → Conv1x1 → AffineCoupling.
                  Source: the architecture figure of Inverse-Flow (Nagar & Varma, AISTATS 2025):
                  inverse of a k×k convolution, actnorm, invertible 1×1 convolution, affine
                  coupling. Data→latent solves T⁻¹ (inv_conv2d); sampling is a plain causal
                  convolution, so sampling is fast.
    glow          ActNorm → Conv1x1 → AffineCoupling.
                  Source: Glow (Kingma & Dhariwal, NeurIPS 2018), one step of flow.
    emerging      ActNorm → Conv1x1 → causal k×k conv (TL) → causal k×k conv (BR) → AffineCoupling.
                  Source: Emerging convolutions (Hoogeboom et al., ICML 2019) and its reference
                  code: the emerging k×k convolution (two masked convolutions with opposite
                  orders) after Glow's 1×1 convolution. Sampling needs two wavefront solves.
    finc          ActNorm → Conv1x1 → one causal k×k conv → AffineCoupling.
                  Source: FInC Flow (Kallappa, Nagar & Varma, VISAPP 2023): the Emerging step
                  with a single masked k×k convolution. Sampling needs one wavefront solve.

The CNN-only family (the paper's Table 4, after Self-Normalizing Flows): the k×k (or 1×1)
convolution is the only layer that mixes pixels or channels; no coupling, so ``width`` is unused.

    cnn-inverse-flow  InvConv2d (inverse placement) → ActNorm → SmoothLeakyReLU (mirrored on odd
                      steps: z = −f(−x); see SmoothLeakyReLU).
    cnn-finc          causal k×k conv (conv placement, FInC/Emerging's) → ActNorm → SmoothLeakyReLU:
                      the same parameters as cnn-inverse-flow, the inverse where it is not.
    cnn-glow          Conv1x1 → ActNorm → SmoothLeakyReLU: Glow's 1×1, the weak baseline
                      (C² weights per step against C²(k²−1)/2 + C(C+1)/2 for the k×k ones).

Every model is one ``@register_model`` step builder (``REGISTRY``); the builder receives the
whole :class:`FlowConfig`.

The k×k orders alternate TL, BR, TR, BL from step to step (inverse-flow, finc) so the
receptive field covers every direction. The invertible 1×1 convolution mixes all channels
before each coupling, so successive couplings do not always transform the same half (no fixed
channel permutation is needed).

``model(x)`` maps data ``x ∈ [0, 1)^D`` (dequantized, bpd.py) to its log-density
``log p(x)`` per image; ``model.sample(n)`` draws images in [0, 1].
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from .layers import (ActNorm, AffineCoupling, Conv1x1, FlowSequence, InvConv2d, LogitTransform,
                     SmoothLeakyReLU, Squeeze, _ZeroConv)
from .validate import require_int

__all__ = ["FlowConfig", "MultiScaleFlow", "SplitPrior", "build_flow", "allocate_flow", "MODELS",
           "CNN_MODELS", "ALL_MODELS", "REGISTRY", "ModelSpec", "register_model", "FAMILY_REFERENCE",
           "FAMILY_BASELINE", "family_of", "parameter_count", "memory_estimate", "machine_memory",
           "require_fits_in_memory", "SIZE_LIMIT"]

_ORDERS = ("TL", "BR", "TR", "BL")
_LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class FlowConfig:
    """Architecture of a multi-scale flow: a value (frozen; derive variants with
    ``dataclasses.replace``). The defaults describe the embedded digits: 1×8×8, 17 levels."""

    model: str = "inverse-flow"
    image_shape: tuple = (1, 8, 8)     # (C, H, W)
    levels: int = 2
    steps: int = 4
    width: int = 64                    # hidden channels of each coupling network (coupled models)
    kernel_size: int = 3               # of the k×k invertible convolutions
    n_bins: int = 17
    logit_alpha: float = 0.05

    def __post_init__(self):
        object.__setattr__(self, "image_shape", tuple(int(v) for v in self.image_shape))
        if self.model not in REGISTRY:
            raise ValueError(f"model must be one of {', '.join(REGISTRY)}, got {self.model!r}")
        if len(self.image_shape) != 3 or min(self.image_shape) < 1:
            raise ValueError(f"image_shape must be (C, H, W) with positive sizes, got {self.image_shape}")
        for name in ("levels", "steps", "width", "kernel_size"):
            require_int(name, getattr(self, name), 1)
        require_int("n_bins", self.n_bins, 2)
        for name in ("levels", "width", "kernel_size"):  # sizes beyond what a tensor can have
            if getattr(self, name) > SIZE_LIMIT:
                raise ValueError(f"{name} must be at most {SIZE_LIMIT:,}, got {getattr(self, name)}")
        h, w = self.image_shape[1:]
        if self.levels >= min(h, w).bit_length() or h % (1 << self.levels) or w % (1 << self.levels):
            raise ValueError(f"levels={self.levels}: the image {h}×{w} must be divisible by "
                             f"2^levels (each level halves it)")
        if not 0 <= self.logit_alpha < 0.5:
            raise ValueError(f"logit_alpha must be in [0, 0.5), got {self.logit_alpha!r}")

    @classmethod
    def for_dataset(cls, dataset: str, model: str = "inverse-flow", levels: int | None = None,
                    **architecture) -> "FlowConfig":
        """The one place a config is built from a dataset's facts (``DATASET_INFO``): its image
        shape and ``n_bins``, and its default ``levels`` when ``levels`` is None; the other
        fields (``steps``, ``width``, ``kernel_size``, ...) from ``architecture``."""
        from .data import DATASET_INFO, DATASETS
        if dataset not in DATASET_INFO:
            raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
        info = DATASET_INFO[dataset]
        return cls(model=model, image_shape=info.image_shape, levels=levels or info.levels,
                   n_bins=info.n_bins, **architecture)

    @property
    def spec(self) -> "ModelSpec":
        """The registry entry of ``model``."""
        return REGISTRY[self.model]

    @property
    def coupling_width(self) -> int | None:
        """``width`` for a model with couplings; None for one without (nothing it sizes)."""
        return self.width if self.spec.coupled else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["image_shape"] = list(self.image_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict, what: str = "config") -> "FlowConfig":
        """The config of ``to_dict()`` output, migrated by the one rule of :mod:`.migration`: a
        field the dict lacks takes the default recorded for runs saved before the field existed;
        an unknown field, a missing original one or a mistyped value is a
        :class:`~invconv_core.flows.migration.SettingsError` naming ``what`` and the field."""
        from .migration import migrate
        return cls(**migrate(cls, d, what))

    def differences(self, saved: dict) -> list[str]:
        """How a saved config (``to_dict()`` output, migrated as :meth:`from_dict` does) differs
        from this one: ``"width: saved 16, now 8"`` per differing field (empty: the same
        architecture)."""
        try:
            old = FlowConfig.from_dict(saved)
        except (TypeError, ValueError) as err:
            return [f"not a config of this version ({err})"]
        return [f"{f.name}: saved {getattr(old, f.name)!r}, now {getattr(self, f.name)!r}"
                for f in dataclasses.fields(self) if getattr(old, f.name) != getattr(self, f.name)]


def _gaussian_logp(x, mean, logs):
    return (-0.5 * (_LOG_2PI + 2 * logs + (x - mean) ** 2 * torch.exp(-2 * logs))).flatten(1).sum(1)


@dataclass(frozen=True)
class ModelSpec:
    """One model of the registry: ``build_step(config, channels, index)`` returns the layers of
    step ``index`` (0-based, within a level) at ``channels`` channels in data→latent order; it
    receives the whole :class:`FlowConfig`, so a model reads any option it needs from there.
    ``family`` groups the models compared with one another (``MODELS``: the glow-like family,
    ``CNN_MODELS``: the CNN-only one); ``coupled``: the model has affine couplings, so
    ``width`` sizes it (equal-size matching varies ``width``, docs/design.md)."""

    name: str
    family: str
    coupled: bool
    build_step: object
    summary: str


#: Every model by name, in registration order. Adding a model: one ``@register_model`` function
#: here (docs/design.md, "Adding a model").
REGISTRY: dict = {}


#: The families, each compared within itself (FAMILY_REFERENCE, below, names their references).
FAMILIES = ("glow-like", "cnn-only")


def register_model(name: str, family: str, coupled: bool, summary: str):
    """Decorator registering ``build_step(config, channels, index) -> list[FlowLayer]``."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")

    def add(build_step):
        if name in REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        REGISTRY[name] = ModelSpec(name, family, coupled, build_step, summary)
        return build_step
    return add


def _order(index: int) -> str:
    return _ORDERS[index % 4]


def _coupling(cfg, channels):
    # Built before the step's other layers, as since 0.2.0: the parameters are drawn from the
    # global RNG in construction order, so this order is what makes a seed give the same model
    # (and the published runs reproduce) across versions
    return AffineCoupling(channels, cfg.width)


@register_model("inverse-flow", "glow-like", True,
                "InvConv2d (inverse placement) → ActNorm → Conv1x1 → AffineCoupling")
def _inverse_flow_step(cfg, channels, index):
    coupling = _coupling(cfg, channels)
    return [InvConv2d(channels, cfg.kernel_size, _order(index), placement="inverse"),
            ActNorm(channels), Conv1x1(channels), coupling]


@register_model("glow", "glow-like", True, "ActNorm → Conv1x1 → AffineCoupling")
def _glow_step(cfg, channels, index):
    coupling = _coupling(cfg, channels)
    return [ActNorm(channels), Conv1x1(channels), coupling]


@register_model("emerging", "glow-like", True,
                "ActNorm → Conv1x1 → causal k×k conv (TL) → causal k×k conv (BR) → AffineCoupling")
def _emerging_step(cfg, channels, index):
    k, coupling = cfg.kernel_size, _coupling(cfg, channels)
    return [ActNorm(channels), Conv1x1(channels),
            InvConv2d(channels, k, "TL", placement="conv"),
            InvConv2d(channels, k, "BR", placement="conv"), coupling]


@register_model("finc", "glow-like", True,
                "ActNorm → Conv1x1 → one causal k×k conv → AffineCoupling")
def _finc_step(cfg, channels, index):
    coupling = _coupling(cfg, channels)
    return [ActNorm(channels), Conv1x1(channels),
            InvConv2d(channels, cfg.kernel_size, _order(index), placement="conv"), coupling]


#: Slope of the CNN-only models' SmoothLeakyReLU for x → −∞ (Self-Normalizing Flows' value).
CNN_ACTIVATION_ALPHA = 0.1


def _activation(cfg, index):
    # mirrored on odd steps: nothing else in these steps can flip a sign, and one form alone
    # contracts only the negative side (docs/design.md, "The CNN-only flows")
    return SmoothLeakyReLU(CNN_ACTIVATION_ALPHA, mirrored=index % 2 == 1)


@register_model("cnn-inverse-flow", "cnn-only", False,
                "InvConv2d (inverse placement) → ActNorm → SmoothLeakyReLU")
def _cnn_inverse_flow_step(cfg, channels, index):
    return [InvConv2d(channels, cfg.kernel_size, _order(index), placement="inverse"),
            ActNorm(channels), _activation(cfg, index)]


@register_model("cnn-finc", "cnn-only", False,
                "causal k×k conv (FInC/Emerging placement) → ActNorm → SmoothLeakyReLU")
def _cnn_finc_step(cfg, channels, index):
    return [InvConv2d(channels, cfg.kernel_size, _order(index), placement="conv"),
            ActNorm(channels), _activation(cfg, index)]


@register_model("cnn-glow", "cnn-only", False, "Conv1x1 → ActNorm → SmoothLeakyReLU")
def _cnn_glow_step(cfg, channels, index):
    return [Conv1x1(channels), ActNorm(channels), _activation(cfg, index)]


#: The glow-like family: invconv-compare's and invconv-time's default models.
MODELS = tuple(n for n, m in REGISTRY.items() if m.family == "glow-like")
#: The CNN-only family (the paper's Table 4): the k×k (or 1×1) convolutions are the only layers
#: that mix pixels.
CNN_MODELS = tuple(n for n, m in REGISTRY.items() if m.family == "cnn-only")
ALL_MODELS = tuple(REGISTRY)
#: The model of each family the others are sized against (equal parameter count).
FAMILY_REFERENCE = {"glow-like": "inverse-flow", "cnn-only": "cnn-inverse-flow"}
#: The Glow-1×1 model of each family: the tables' "− Glow's" column and "ST / Glow ST" ratio.
FAMILY_BASELINE = {"glow-like": "glow", "cnn-only": "cnn-glow"}


def family_of(models) -> str:
    """The one family of ``models`` (names of the registry); ValueError for an empty list, an
    unknown name or models of two families (they are not compared with one another)."""
    models = tuple(models)
    unknown = [m for m in models if m not in REGISTRY]
    if unknown or not models:
        raise ValueError(f"models must be a non-empty list of {', '.join(REGISTRY)}, got {list(models)}")
    families = sorted({REGISTRY[m].family for m in models})
    if len(families) > 1:
        raise ValueError(f"models must be of one family (glow-like: {', '.join(MODELS)}; cnn-only: "
                         f"{', '.join(CNN_MODELS)}), got {list(models)}")
    return families[0]


class SplitPrior(nn.Module):
    """Not a flow layer (no bijection, no log-det): the conditional Gaussian prior of a
    multi-scale split. :meth:`log_prob` scores the last ``C − C//2`` channels given the kept
    ``C//2`` (mean and log-scale from a zero-initialised conv of the kept channels);
    :meth:`sample` draws them and returns the full tensor."""

    def __init__(self, channels: int):
        super().__init__()
        self.keep = channels // 2
        self.conv = _ZeroConv(self.keep, 2 * (channels - self.keep))

    def _stats(self, kept):
        h = self.conv(kept)
        return h[:, 0::2], h[:, 1::2]

    def log_prob(self, x):
        """x (N, C, H, W) → (kept (N, C//2, H, W), log p(factored-out | kept) of shape (N,))."""
        kept, out = x[:, :self.keep], x[:, self.keep:]
        mean, logs = self._stats(kept)
        return kept, _gaussian_logp(out, mean, logs)

    def sample(self, kept, temperature: float = 1.0):
        """kept (N, C//2, H, W) → (N, C, H, W): the factored-out channels drawn from the prior."""
        mean, logs = self._stats(kept)
        out = mean + torch.exp(logs) * torch.randn_like(mean) * temperature
        return torch.cat([kept, out], 1)


class MultiScaleFlow(nn.Module):
    def __init__(self, config: FlowConfig):
        super().__init__()
        self.config = config
        c, h, w = config.image_shape  # (levels checked against h, w by FlowConfig)
        self.pre = LogitTransform(config.logit_alpha)
        self.levels = nn.ModuleList()
        self.splits = nn.ModuleList()
        for level in range(config.levels):
            c, h, w = 4 * c, h // 2, w // 2
            layers = [Squeeze()]
            for s in range(config.steps):
                layers += REGISTRY[config.model].build_step(config, c, s)
            self.levels.append(FlowSequence(layers))
            if level < config.levels - 1:
                self.splits.append(SplitPrior(c))
                c = c // 2
        self.top_shape = (c, h, w)
        self.top_mean = nn.Parameter(torch.zeros(1, *self.top_shape))
        self.top_logs = nn.Parameter(torch.zeros(1, *self.top_shape))

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> "MultiScaleFlow":
        """Data-dependent initialisation of every ActNorm from the batch ``x`` (dequantized data
        (N, C, H, W) in [0, 1)), as the first training-mode forward does. Call it before
        ``torch.compile(model, fullgraph=True)``: the compiled forward then has no
        initialisation branch. Returns the model."""
        was_training = self.training
        self.train()
        try:
            self(x)
        finally:
            self.train(was_training)
        return self

    @property
    def dims(self) -> int:
        c, h, w = self.config.image_shape
        return c * h * w

    def encode(self, x: torch.Tensor):
        """data → latent: ``(zs, logabsdet, log_prior)`` with ``zs`` the factored-out latents of
        each level and the top latent last, ``logabsdet = log|det ∂(zs)/∂x|`` and ``log_prior``
        the (conditional) Gaussian log-densities of ``zs``, each of shape (N,)."""
        h, logdet = self.pre(x)
        log_prior = torch.zeros_like(logdet)
        zs = []
        for i, level in enumerate(self.levels):
            h, ld = level(h)
            logdet = logdet + ld
            if i < len(self.splits):
                split = self.splits[i]
                zs.append(h[:, split.keep:])
                h, lp = split.log_prob(h)
                log_prior = log_prior + lp
        zs.append(h)
        return zs, logdet, log_prior + _gaussian_logp(h, self.top_mean, self.top_logs)

    def latent_shapes(self) -> list[tuple[int, int, int]]:
        """The shape (C, H, W) of each latent :meth:`encode` returns, in its order."""
        shapes = []
        c, h, w = self.config.image_shape
        for i in range(len(self.levels)):
            c, h, w = 4 * c, h // 2, w // 2
            if i < len(self.splits):
                keep = self.splits[i].keep
                shapes.append((c - keep, h, w))
                c = keep
        return shapes + [self.top_shape]

    def latent_priors(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(z, mean, log_scale)`` of each latent of :meth:`encode`: the Gaussian its prior
        assigns to it (conditional on the kept channels at a split), for checks that recompute
        the prior term independently (``invconv_core.testing.check_flow_model``)."""
        h, _ = self.pre(x)
        out = []
        for i, level in enumerate(self.levels):
            h, _ = level(h)
            if i < len(self.splits):
                split = self.splits[i]
                mean, logs = split._stats(h[:, :split.keep])
                out.append((h[:, split.keep:], mean, logs))
                h = h[:, :split.keep]
        return out + [(h, self.top_mean.expand_as(h), self.top_logs.expand_as(h))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) per image (natural log) for dequantized ``x ∈ [0, 1)^D``, shape (N,)."""
        _, logdet, log_prior = self.encode(x)
        return logdet + log_prior

    def decode(self, zs=None, n: int | None = None, temperature: float = 1.0) -> torch.Tensor:
        """latent → data. With ``zs`` (as from :meth:`encode`) the exact inverse; with
        ``zs=None`` every latent is drawn from its prior (scaled by ``temperature``)."""
        if zs is None:
            mean = self.top_mean.expand(n, *self.top_shape)
            h = mean + torch.exp(self.top_logs) * torch.randn_like(mean) * temperature
        else:
            h = zs[-1]
        for i in reversed(range(len(self.levels))):
            if i < len(self.splits):
                if zs is None:
                    h = self.splits[i].sample(h, temperature)
                else:
                    h = torch.cat([h, zs[i]], 1)
            h, _ = self.levels[i].inverse(h)
        x, _ = self.pre.inverse(h)
        return x

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """n images in [0, 1] (the latent→data pass)."""
        return self.decode(None, n, temperature).clamp(0, 1)


#: The largest ``levels``/``width``/``kernel_size`` a config may name (a bound on what
#: :func:`parameter_count` can evaluate on the meta device; every real model is far below it;
#: ``steps`` has no bound here: the count is extrapolated in it).
SIZE_LIMIT = 2**31 - 1


def parameter_count(config: FlowConfig) -> int:
    """The parameter count of ``build_flow(config)``, without allocating it: the flow at one and
    at two steps per level is built on the ``meta`` device (shapes only, no storage) and the
    count extrapolated linearly in ``steps`` (every step of a level has the same parameters)."""
    def count(steps):
        with torch.device("meta"):
            return sum(p.numel() for p in build_flow(config, steps=steps).parameters())
    one = count(1)
    return one + (config.steps - 1) * (count(2) - one)


def memory_estimate(config: FlowConfig, batch_size: int) -> tuple[int, int]:
    """``(parameters, bytes)``: the parameter count and a lower estimate of the memory training
    ``config`` at ``batch_size`` takes in float32 -- weights, gradients and Adam's two moments
    (4 × 4 bytes per parameter) plus, per image and step, the activations kept for the backward
    pass (the state, and for a coupled model the coupling's hidden layers, at each level's
    resolution). A lower estimate: a run it refuses cannot fit, a run it admits may still not."""
    params = parameter_count(config)
    c, h, w = config.image_shape
    per_step = 0
    for level in range(config.levels):
        c, h, w = 4 * c, h // 2, w // 2
        per_step += c * h * w + (2 * config.width * h * w if config.spec.coupled else 0)
        if level < config.levels - 1:
            c //= 2
    activations = batch_size * config.steps * per_step * 4
    return params, 16 * params + activations


def machine_memory(device: str | None = None) -> int | None:
    """Bytes of memory on ``device``: the GPU's for ``cuda[:N]``, else the machine's physical
    memory (None when the system does not say)."""
    if device is not None and str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_properties(torch.device(device)).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024


def require_fits_in_memory(config: FlowConfig, batch_size: int, device: str | None = None,
                           steps_option: str = "steps") -> None:
    """ValueError naming the options, the estimate (:func:`memory_estimate`) and the memory of
    ``device`` when training ``config`` at ``batch_size`` cannot fit -- before anything is
    allocated or created. ``steps_option``: how the caller's user named ``steps``."""
    available = machine_memory(device)
    params, needed = memory_estimate(config, batch_size)
    if available is not None and needed > available:
        raise ValueError(f"the model does not fit in memory (width={config.width}, "
                         f"{steps_option}={config.steps}, levels={config.levels}, "
                         f"batch_size={batch_size}): about {_size(needed)} for {params:,} "
                         f"parameters and their activations, this "
                         f"{'GPU' if device and str(device).startswith('cuda') else 'machine'} "
                         f"has {_size(available)}")


def allocate_flow(config: FlowConfig) -> MultiScaleFlow:
    """:func:`build_flow`, with a ValueError naming the size when its parameters cannot be
    allocated (``width=1000000`` asks for a 4 TB weight) instead of the allocator's traceback."""
    try:
        return build_flow(config)
    except (RuntimeError, MemoryError) as err:  # torch.OutOfMemoryError is a RuntimeError
        if not isinstance(err, MemoryError) and "alloc" not in str(err).lower():
            raise
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise ValueError(f"the model does not fit in memory (width={config.width}, "
                         f"steps={config.steps}, levels={config.levels}): {first}") from None


def build_flow(config: FlowConfig | None = None, **overrides) -> MultiScaleFlow:
    """A new model for ``config`` (default ``FlowConfig()``) with ``overrides`` applied to a copy
    (``config`` itself is never changed)."""
    config = dataclasses.replace(config or FlowConfig(), **overrides)
    return MultiScaleFlow(config)
