r"""Flow layers. Convention everywhere (and the sign of every log-det):

    forward(x)  -> (z, logabsdet)   data → latent;  logabsdet = log|det ∂z/∂x|  per sample, shape (N,)
    inverse(z)  -> (x, logabsdet)   latent → data;  logabsdet = log|det ∂x/∂z| = −(forward's)

so ``log p(x) = log p_Z(z) + forward logabsdet``. Tensors are NCHW.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from .. import ops
from .._geometry import check_order, current_tap

__all__ = ["FlowLayer", "InvConv2d", "ActNorm", "AffineCoupling", "Squeeze", "Conv1x1",
           "LogitTransform", "SmoothLeakyReLU", "FlowSequence"]


class FlowLayer(nn.Module):
    """Base class: ``forward(x) -> (z, logabsdet)``, ``inverse(z) -> (x, logabsdet)``."""

    def inverse(self, z: torch.Tensor):  # pragma: no cover - abstract
        raise NotImplementedError


class FlowSequence(FlowLayer):
    """Layers applied in order (data→latent); the inverse runs them backwards."""

    def __init__(self, layers):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        total = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, ld = layer(x)
            total = total + ld
        return x, total

    def inverse(self, z):
        total = z.new_zeros(z.shape[0])
        for layer in reversed(self.layers):
            z, ld = layer.inverse(z)
            total = total + ld
        return z, total


def _inv_softplus(y: float) -> float:
    return math.log(math.expm1(y))


class InvConv2d(FlowLayer):
    r"""Invertible k×k causal convolution ``T`` (docs/design.md §1) as a flow layer.

    The weight is parametrised so ``T`` is always invertible: the current-pixel tap is lower
    triangular (the ops mask its upper part) with diagonal ``softplus(d) + min_diag > 0``
    (learnable), or fixed to 1 with ``learn_diag=False``; the other taps start at N(0, init_std²).

    ``placement="inverse"`` (Inverse-Flow): data→latent is ``z = T⁻¹ x`` (``inv_conv2d``,
    forward logabsdet ``−H·W·Σ log diag``) and sampling is the plain convolution ``x = T z``.
    ``placement="conv"`` (FInC/Emerging): data→latent is ``z = T x`` (logabsdet
    ``+H·W·Σ log diag``), sampling needs the inverse.
    """

    def __init__(self, channels: int, kernel_size=3, order: str = "TL", placement: str = "inverse",
                 learn_diag: bool = True, min_diag: float = 1e-2, init_std: float = 1e-3):
        super().__init__()
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        if placement not in ("inverse", "conv"):
            raise ValueError(f"placement must be 'inverse' or 'conv', got {placement!r}")
        self.order = check_order(order)
        self.placement = placement
        self.min_diag = float(min_diag)
        a, b = current_tap(order, kh, kw)
        w = torch.randn(channels, channels, kh, kw) * init_std
        w[:, :, a, b] = torch.tril(w[:, :, a, b], -1)
        self.weight = nn.Parameter(w)
        onehot = torch.zeros(kh, kw)
        onehot[a, b] = 1.0
        eye = torch.eye(channels)
        # 1 everywhere but on the current tap's diagonal, which comes from the diag parameter
        self.register_buffer("keep", 1.0 - eye[:, :, None, None] * onehot, persistent=False)
        self.register_buffer("diag_place", eye[:, :, None, None] * onehot, persistent=False)
        if learn_diag:
            self.diag_param = nn.Parameter(torch.full((channels,), _inv_softplus(1.0 - self.min_diag)))
        else:
            self.register_parameter("diag_param", None)

    def diag(self) -> torch.Tensor:
        if self.diag_param is None:
            return torch.ones(self.weight.shape[0], device=self.weight.device, dtype=self.weight.dtype)
        return F.softplus(self.diag_param) + self.min_diag

    def full_weight(self, d: torch.Tensor | None = None) -> torch.Tensor:
        """The (C, C, kh, kw) weight of ``T``; ``d``: :meth:`diag`, if already computed."""
        d = self.diag() if d is None else d
        return self.weight * self.keep + self.diag_place * d[:, None, None, None]

    def conv_logabsdet(self, h: int, w: int, d: torch.Tensor | None = None) -> torch.Tensor:
        """log|det T| for one h×w image; ``d``: :meth:`diag`, if already computed."""
        d = self.diag() if d is None else d
        return h * w * torch.log(d).sum()

    def _transform(self, x, invert: bool):
        d = self.diag()  # once per call: each small op is a fixed cost (and an autograd node)
        w = self.full_weight(d)
        ld = self.conv_logabsdet(x.shape[2], x.shape[3], d).expand(x.shape[0])
        if invert:
            return ops.inv_conv2d(x, w, self.order), -ld
        return ops.causal_conv2d(x, w, self.order), ld

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """data → latent: x (N, C, H, W) → ``(z, logabsdet)``, z (N, C, H, W) in x's dtype,
        logabsdet (N,) ``= log|det ∂z/∂x|`` (``−H·W·Σ log diag`` for ``placement="inverse"``,
        ``+H·W·Σ log diag`` for ``"conv"``). Outside a flow, take ``[0]`` or call
        :func:`invconv_core.inv_conv2d` / ``causal_conv2d`` with :meth:`full_weight`."""
        return self._transform(x, invert=self.placement == "inverse")

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """latent → data: z (N, C, H, W) → ``(x, logabsdet)`` with the negated log-det."""
        return self._transform(z, invert=self.placement == "conv")

    def extra_repr(self) -> str:
        c, _, kh, kw = self.weight.shape
        return (f"{c}, kernel_size=({kh}, {kw}), order={self.order!r}, placement={self.placement!r}, "
                f"learn_diag={self.diag_param is not None}, min_diag={self.min_diag:g}")


class ActNorm(FlowLayer):
    r"""Per-channel affine ``z = (x + bias)·exp(logs)``; forward logabsdet ``H·W·Σ logs``.

    Data-dependent initialisation on the first forward batch in training mode (zero mean, unit
    variance per channel). Whether it happened is a buffer, so it survives a checkpoint load;
    under ``torch.distributed`` the batch statistics are averaged over all ranks, so every
    replica starts identical. The forward branches on a Python mirror of that buffer, not on
    the tensor, so once initialised (one eager forward, or :meth:`MultiScaleFlow.initialize`)
    ``torch.compile(model, fullgraph=True)`` traces it without a data-dependent branch.
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))
        self.is_initialized = False  # mirrors the buffer (a Python bool: no graph break)
        self.eps = eps

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.is_initialized = bool(self.initialized)

    def extra_repr(self) -> str:
        return f"{self.bias.shape[1]}, initialized={self.is_initialized}"

    @torch.no_grad()
    def _initialize(self, x):
        n = torch.tensor(float(x.shape[0] * x.shape[2] * x.shape[3]), device=x.device, dtype=x.dtype)
        s1 = x.sum(dim=(0, 2, 3))
        s2 = (x * x).sum(dim=(0, 2, 3))
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            c = s1.numel()
            stats = torch.cat([s1, s2, n.reshape(1)])
            dist.all_reduce(stats)
            s1, s2, n = stats[:c], stats[c:2 * c], stats[2 * c]
        mean = s1 / n
        var = (s2 / n - mean * mean).clamp_min(0)
        self.bias.copy_(-mean.view(1, -1, 1, 1))
        self.logs.copy_(-0.5 * torch.log(var + self.eps).view(1, -1, 1, 1))
        self.initialized.fill_(1)
        self.is_initialized = True

    def forward(self, x):
        if self.training and not self.is_initialized:
            self._initialize(x)
        ld = (x.shape[2] * x.shape[3]) * self.logs.sum()
        return (x + self.bias) * torch.exp(self.logs), ld.expand(x.shape[0])

    def inverse(self, z):
        ld = -(z.shape[2] * z.shape[3]) * self.logs.sum()
        return z * torch.exp(-self.logs) - self.bias, ld.expand(z.shape[0])


class _ZeroConv(nn.Conv2d):
    """3×3 conv initialised to zero, so a coupling or prior starts as the identity."""

    def __init__(self, cin, cout):
        super().__init__(cin, cout, 3, padding=1)
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)


class AffineCoupling(FlowLayer):
    r"""Glow's affine coupling. Channels split as (x_a, x_b), ``C_a = C // 2``;
    ``(shift, s) = NN(x_a)``, ``scale = sigmoid(s + 2)``, ``z_b = (x_b + shift)·scale``;
    forward logabsdet ``Σ log scale`` (≤ 0 per entry, so the layer cannot blow up)."""

    def __init__(self, channels: int, width: int = 64):
        super().__init__()
        if channels < 2:
            raise ValueError(f"AffineCoupling needs at least 2 channels, got {channels}")
        self.ca = channels // 2
        cb = channels - self.ca
        self.net = nn.Sequential(
            nn.Conv2d(self.ca, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 1), nn.ReLU(),
            _ZeroConv(width, 2 * cb))

    def _params(self, xa):
        h = self.net(xa)
        shift, s = h[:, 0::2], h[:, 1::2]
        return shift, torch.sigmoid(s + 2.0)

    def forward(self, x):
        xa, xb = x[:, :self.ca], x[:, self.ca:]
        shift, scale = self._params(xa)
        return torch.cat([xa, (xb + shift) * scale], 1), torch.log(scale).flatten(1).sum(1)

    def inverse(self, z):
        za, zb = z[:, :self.ca], z[:, self.ca:]
        shift, scale = self._params(za)
        return torch.cat([za, zb / scale - shift], 1), -torch.log(scale).flatten(1).sum(1)


class Squeeze(FlowLayer):
    """(C, H, W) → (4C, H/2, W/2), volume preserving (logabsdet 0). H and W must be even."""

    def forward(self, x):
        n, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"Squeeze needs even height and width, got {h}×{w}")
        x = x.view(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
        return x.reshape(n, 4 * c, h // 2, w // 2), x.new_zeros(n)

    def inverse(self, z):
        n, c, h, w = z.shape
        z = z.view(n, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
        return z.reshape(n, c // 4, 2 * h, 2 * w), z.new_zeros(n)


class Conv1x1(FlowLayer):
    """Glow's invertible 1×1 convolution (in the step of every model: it mixes all channels
    before each coupling); forward logabsdet ``H·W·log|det W|``. Initialised to a random
    rotation."""

    def __init__(self, channels: int):
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(channels, channels))
        self.weight = nn.Parameter(q)

    def forward(self, x):
        ld = x.shape[2] * x.shape[3] * torch.linalg.slogdet(self.weight)[1]
        return F.conv2d(x, self.weight[:, :, None, None]), ld.expand(x.shape[0])

    def inverse(self, z):
        ld = -z.shape[2] * z.shape[3] * torch.linalg.slogdet(self.weight)[1]
        return F.conv2d(z, torch.linalg.inv(self.weight)[:, :, None, None]), ld.expand(z.shape[0])


class LogitTransform(FlowLayer):
    r"""``z = logit(α + (1 − 2α)·x)`` for x in [0, 1] (RealNVP's preprocessing), forward
    logabsdet ``Σ [log(1 − 2α) − log p − log(1 − p)]`` with ``p = α + (1 − 2α)x``."""

    def __init__(self, alpha: float = 0.05):
        super().__init__()
        self.alpha = float(alpha)

    def forward(self, x):
        p = self.alpha + (1 - 2 * self.alpha) * x
        z = torch.log(p) - torch.log1p(-p)
        ld = (math.log(1 - 2 * self.alpha) - torch.log(p) - torch.log1p(-p)).flatten(1).sum(1)
        return z, ld

    def inverse(self, z):
        p = torch.sigmoid(z)
        x = (p - self.alpha) / (1 - 2 * self.alpha)
        ld = (torch.log(p) + torch.log1p(-p) - math.log(1 - 2 * self.alpha)).flatten(1).sum(1)
        return x, ld


class SmoothLeakyReLU(FlowLayer):
    r"""Invertible elementwise activation (the smooth leaky ReLU of Self-Normalizing Flows):

        z = f(x) = α·x + (1 − α)·softplus(x),      f'(x) = α + (1 − α)·σ(x) ∈ (α, 1),

    any shape, any floating dtype. Forward logabsdet ``Σ log f'(x)`` per sample (negative: the
    map contracts); inverse logabsdet its negative at the same point, ``−Σ log f'(x)``.

    ``mirrored=True`` is the same function turned by 180°, ``z = −f(−x)``: slope α for
    x → +∞ and 1 for x → −∞, logabsdet ``Σ log f'(−x)``. A flow whose other layers cannot flip
    a sign (positive ActNorm scales, a k×k conv with a positive diagonal) needs both forms to
    contract either side of its values; the CNN-only models alternate them.

    The inverse has no closed form: Newton's method from x₀ = z (z ≥ 0) or z/α (z < 0). f is
    increasing and convex, and f(x₀) ≥ z, so the iterates fall monotonically onto the root,
    quadratically near it; it stops once every step is within round-off of its value. The last
    step is taken with autograd on, so the inverse's gradient is the implicit one, 1/f'(x).
    """

    #: The smallest slope taken: below it, Newton's method from z needs more steps than
    #: ``max_iter`` to cross the flat stretch between z and the root (x ≈ log z for z ≫ α|x|).
    MIN_ALPHA = 1e-6

    def __init__(self, alpha: float = 0.1, max_iter: int = 100, mirrored: bool = False):
        super().__init__()
        if not self.MIN_ALPHA <= float(alpha) < 1.0:
            raise ValueError(f"SmoothLeakyReLU: alpha must be in [{self.MIN_ALPHA:g}, 1), got {alpha!r}")
        self.alpha = float(alpha)
        self.max_iter = int(max_iter)
        self.mirrored = bool(mirrored)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:g}, mirrored={self.mirrored}"

    def _f(self, x):
        # softplus as logaddexp(x, 0): exact for every x (F.softplus returns x past its threshold)
        return self.alpha * x + (1 - self.alpha) * torch.logaddexp(x, torch.zeros_like(x))

    def _log_slope(self, x):
        return torch.log(self.alpha + (1 - self.alpha) * torch.sigmoid(x))

    def _require_normal_slope(self, t) -> None:
        """ValueError when ``alpha`` is not a normal number of ``t``'s dtype (float16's smallest
        is 6.1e-5): the slope would underflow, and the layer would map a whole stretch of
        negative values onto one (x = −30 → −17.56 in float16 at alpha 1e-30; log-det −inf)."""
        tiny = torch.finfo(t.dtype).tiny
        if self.alpha < tiny:
            raise ValueError(f"SmoothLeakyReLU: alpha={self.alpha:g} underflows in {t.dtype} (its "
                             f"smallest normal number is {tiny:.3g}): the layer is not invertible "
                             f"there; use alpha >= {tiny:.3g} or a wider dtype")

    def forward(self, x):
        self._require_normal_slope(x)
        if self.mirrored:
            z, ld = self._forward(-x)
            return -z, ld
        return self._forward(x)

    def inverse(self, z):
        self._require_normal_slope(z)
        if self.mirrored:
            x, ld = self._inverse(-z)
            return -x, ld
        return self._inverse(z)

    def _forward(self, x):
        return self._f(x), self._log_slope(x).flatten(1).sum(1)

    def _inverse(self, z):
        with torch.no_grad():
            x = torch.where(z >= 0, z, z / self.alpha)
            eps = torch.finfo(x.dtype).eps
            for _ in range(self.max_iter):
                step = self._newton_step(x, z)
                x = x - step
                # within round-off everywhere: a few ulps, since at the root the rounded step
                # can flip by one ulp of x forever (float32 ran all max_iter steps with 1 ulp)
                # (a non-finite value has no root to find: it does not hold up the others)
                if bool(((step.abs() <= 8 * eps * x.abs().clamp_min(1)) | ~torch.isfinite(x)).all()):
                    break
        # one more step with autograd: d x / d z = 1 / f'(x) at the root
        x = x - self._newton_step(x, z)
        return x, -self._log_slope(x).flatten(1).sum(1)

    def _newton_step(self, x, z):
        step = (self._f(x) - z) / torch.exp(self._log_slope(x))
        # a non-finite z (x₀ = z or z/α) stays as it is, and holds up no other value
        return torch.where(torch.isfinite(step), step, torch.zeros_like(step))
