"""The checks behind :func:`check_flow_layer` and :func:`check_flow_model`: a flow layer's or a
density model's claims recomputed independently, on tiny float64 copies of an example.

Every comparison measures the worst element of ``|measured − expected| / max(1, |expected|)``
against :func:`tolerance` of the dtype (two thirds of its digits: 3.7e-11 in float64, 2.4e-5 in
float32), except ``gradcheck`` (torch's finite differences and their own float64 tolerances)
and the entropy bound (a statistical bound, six standard errors).
"""

from __future__ import annotations

import copy
import math
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from .adapters import LayerAdapter, ModelAdapter, layer_adapter, model_adapter

__all__ = ["DENSE_LIMIT", "CheckResult", "Report", "FlowCheckError", "ExampleTooLarge", "tolerance",
           "check_flow_layer", "check_flow_model"]

#: The most values per sample an example may have: the dense Jacobian is d × d (4,096² float64
#: values are 128 MiB, and d backward passes build it).
DENSE_LIMIT = 4096
DIRECTIONS = ("forward", "inverse")


class ExampleTooLarge(ValueError):
    """The example is too large for a dense Jacobian (raised before anything is allocated)."""


class FlowCheckError(AssertionError):
    """A check failed; the message is the report's failure lines."""


def tolerance(dtype: torch.dtype) -> float:
    """The tolerance of every exact comparison in ``dtype``: ``eps ** (2/3)`` (two thirds of
    the dtype's digits; the rest is left to round-off accumulated through a few layers)."""
    return torch.finfo(dtype).eps ** (2 / 3)


@dataclass
class CheckResult:
    """One property in one direction: ``measured`` is the worst scaled error (or, for
    ``gradcheck`` and the entropy bound, what the check measures), ``detail`` where it was."""
    property: str
    direction: str
    passed: bool | None  # None: not evaluated (``detail`` says why)
    measured: float = float("nan")
    limit: float = float("nan")
    detail: str = ""
    note: str = ""  # shown whatever the outcome (what was left out of a passing comparison)
    measure: str = "worst"        # what ``measured`` is
    limit_name: str = "tolerance"  # and ``limit``

    def to_dict(self) -> dict:
        """JSON-ready: non-finite numbers (not measured; an infinite error) become null, with
        ``status`` PASS / FAIL / SKIP."""
        finite = lambda v: v if math.isfinite(v) else None  # noqa: E731
        return {"property": self.property, "direction": self.direction, "status": self.line().split()[0],
                "measured": finite(self.measured), "tolerance": finite(self.limit), "detail": self.detail,
                "note": self.note}

    def line(self) -> str:
        status = "SKIP" if self.passed is None else ("PASS" if self.passed else "FAIL")
        numbers = ("" if math.isnan(self.measured) else
                   f"  {self.measure} {self.measured:.3g} ({self.limit_name} {self.limit:.3g})")
        shown = self.passed is not True or math.isnan(self.measured)
        detail = f"  {self.detail}" if self.detail and shown else ""
        note = f"  ({self.note})" if self.note else ""
        return f"{status} {self.property:20s} {self.direction:17s}{numbers}{detail}{note}"


@dataclass
class Report:
    """The results of one check_flow_layer or check_flow_model call."""
    subject: str
    protocol: str
    dtype: str
    results: list[CheckResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(r.passed is not False for r in self.results)

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.passed is False]

    def failed(self, prop: str) -> bool:
        """Whether the named property failed in some direction."""
        return any(r.property == prop for r in self.failures)

    def lines(self) -> list[str]:
        return [r.line() for r in self.results]

    def __str__(self) -> str:
        head = f"{self.subject} (protocol {self.protocol}, {self.dtype})"
        verdict = (f"all {len(self.results)} checks passed" if self.passed else
                   f"{len(self.failures)} of {len(self.results)} checks failed")
        return "\n".join([head, *self.lines(), f"{verdict} in {self.seconds:.2f} s"])

    def raise_if_failed(self) -> "Report":
        """Raise :class:`FlowCheckError` listing the failures; return the report otherwise."""
        if not self.passed:
            raise FlowCheckError(f"{self.subject}: " + "; ".join(r.line() for r in self.failures))
        return self


# -- helpers --------------------------------------------------------------------------------------

def _worst(measured: torch.Tensor, expected: torch.Tensor) -> tuple[float, tuple[int, ...], float, float]:
    """(worst scaled error, its index, measured, expected there); non-finite values count as inf."""
    m, e = measured.detach().double(), expected.detach().double()
    if m.shape != e.shape:
        return float("inf"), (), float("nan"), float("nan")
    err = (m - e).abs() / e.abs().clamp_min(1.0)
    err = torch.where(torch.isfinite(err), err, torch.full_like(err, float("inf")))
    if err.numel() == 0:
        return 0.0, (), 0.0, 0.0
    flat = int(torch.argmax(err))
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), err.shape))
    return float(err.reshape(-1)[flat]), index, float(m.reshape(-1)[flat]), float(e.reshape(-1)[flat])


def _compare(prop, direction, measured, expected, tol, what: str, expected_name: str) -> CheckResult:
    if measured.shape != expected.shape:
        return CheckResult(prop, direction, False, float("inf"), tol,
                           f"{what} has shape {tuple(measured.shape)}, expected {tuple(expected.shape)}")
    worst, index, m, e = _worst(measured, expected)
    where = f"sample {index[0]}" + (f", element {index[1:]}" if len(index) > 1 else "") if index else ""
    return CheckResult(prop, direction, worst <= tol, worst, tol,
                       f"at {where}: {what} {m:.10g}, {expected_name} {e:.10g}")


def _slogdet(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, i: int) -> tuple[torch.Tensor, int]:
    """(log|det J|, sign) of J = ∂fn(x)[i]/∂x[i], the Jacobian of sample i's output with respect
    to sample i's input with the rest of the batch in place (so the layer sees the batch it sees
    in use). The output of sample i must have as many values as its input."""
    def of_sample(v):
        batch = torch.cat([x[:i], v.view(1, *x.shape[1:]), x[i + 1:]])
        return fn(batch)[i].reshape(-1)
    v = x[i].reshape(-1).detach()
    try:
        J = torch.autograd.functional.jacobian(of_sample, v, vectorize=True)
    except (RuntimeError, NotImplementedError):  # an op without a batching rule
        J = torch.autograd.functional.jacobian(of_sample, v)
    if J.dim() != 2 or J.shape[0] != J.shape[1]:
        raise ValueError(f"sample {i} maps {v.numel()} values to {J.shape[0]}: not a bijection of R^d")
    sign, logabsdet = torch.linalg.slogdet(J)
    return logabsdet, int(sign)


def _validate_example(example, max_dims: int, name: str = "example") -> None:
    if not torch.is_tensor(example) or not example.is_floating_point() or example.dim() < 2:
        raise ValueError(f"{name} must be a floating-point tensor (N, ...) with a batch dimension, got "
                         f"{type(example).__name__}{'' if not torch.is_tensor(example) else f' {tuple(example.shape)} {example.dtype}'}")
    if example.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one sample, got shape {tuple(example.shape)}")
    d = example[0].numel()
    if d > max_dims:
        raise ExampleTooLarge(
            f"{name}: {d:,} values per sample {tuple(example.shape[1:])} exceed the dense-Jacobian limit "
            f"of {max_dims:,} (a {d:,}² Jacobian); shrink the example (fewer channels, a smaller image: "
            f"a flow layer's properties do not depend on the size) or raise max_dims")


def _tiny_batch(example: torch.Tensor, samples: int, dtype) -> torch.Tensor:
    """The first ``samples`` samples of the example in ``dtype``; a single sample gets a
    second one (pulled 10 % toward its mean, so a bounded domain such as (0, 1) is kept)."""
    x = example[:samples].detach().to(dtype).clone()
    if len(x) < 2:
        x = torch.cat([x, 0.9 * x + 0.1 * x.mean()])
    return x


def _prepare(module, seed: int, perturb: float, initialize: bool, warm_up: Callable[[], object]):
    """Set up a copy for checking: data-dependent initialisation (one call in training mode on
    the example), evaluation mode, then every trainable floating parameter moved by
    ``perturb``·N(0, 1) so that zero-initialised parts (a coupling's last conv, a prior) are
    exercised. Frozen parameters (``requires_grad=False``) are constants of the layer, often
    tied to each other (FrEIA keeps a permutation and its inverse so): they stay as they are."""
    if not isinstance(module, nn.Module):
        return
    if initialize:
        module.train()
        with torch.no_grad():
            warm_up()
    module.eval()
    if perturb:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in module.parameters():
                if p.requires_grad and p.is_floating_point():
                    p.add_(perturb * torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device))


def _copy(obj, dtype):
    c = copy.deepcopy(obj)
    if isinstance(c, nn.Module):
        c.to(dtype)
    return c


# fast mode prints "numerical:0.21\nanalytical:0.23" (slow mode: "numerical:tensor(...)")
_GRADCHECK_NUMBERS = re.compile(r"numerical:\s*(?:tensor\()?\s*([-+0-9.e]+).*?analytical:\s*(?:tensor\()?\s*([-+0-9.e]+)", re.S)


class _Bound(nn.Module):
    """A module whose forward is one of the adapter's maps, so ``torch.func.functional_call``
    can swap the checked module's parameters for gradcheck's inputs."""

    def __init__(self, inner: nn.Module, fn):
        super().__init__()
        self.inner, self.fn = inner, fn

    def forward(self, x):
        return self.fn(x)


def _gradcheck(adapter: LayerAdapter, direction: str, x: torch.Tensor) -> CheckResult:
    """torch.autograd.gradcheck (fast mode: a random projection of each Jacobian) of the
    output and the log-det with respect to the input and every parameter."""
    fn = adapter.map(direction)
    module = adapter.module if isinstance(adapter.module, nn.Module) else None
    names, params = [], []
    if module is not None:
        for name, p in module.named_parameters():
            if p.requires_grad and p.is_floating_point():
                names.append("inner." + name)
                params.append(p.detach().clone().requires_grad_(True))
    bound = _Bound(module if module is not None else nn.Module(), fn)

    def of(xin, *ps):
        return torch.func.functional_call(bound, dict(zip(names, ps)), (xin,), strict=False)

    inputs = (x.detach().clone().requires_grad_(True), *params)
    labels = ["x"] + [n[len("inner."):] for n in names]
    try:
        torch.autograd.gradcheck(of, inputs, fast_mode=True)
    except Exception as err:  # GradcheckError, or a backward that raises
        msg = str(err)
        which = re.search(r"output (\d+) with respect to input (\d+)", msg)
        nums = _GRADCHECK_NUMBERS.search(msg)
        if which:
            out = ("output", "log-det")[int(which.group(1))] if int(which.group(1)) < 2 else which.group(1)
            detail = f"d {out} / d {labels[int(which.group(2))]}"
            if nums:
                detail += f": finite differences {float(nums.group(1)):.6g}, autograd {float(nums.group(2)):.6g}"
        else:
            detail = msg.strip().splitlines()[0] if msg.strip() else type(err).__name__
        return CheckResult("gradcheck", direction, False, detail=detail)
    return CheckResult("gradcheck", direction, True,
                       detail=f"w.r.t. the input and {len(params)} parameter tensors")


# -- layers ---------------------------------------------------------------------------------------

def check_flow_layer(layer, example: torch.Tensor, *, directions: Sequence[str] = DIRECTIONS,
                     dtype: torch.dtype = torch.float64, protocol: str = "auto", samples: int = 3,
                     perturb: float = 0.05, seed: int = 0, initialize: bool = True,
                     gradcheck: bool = True, max_dims: int = DENSE_LIMIT) -> Report:
    """Check a flow layer's claims on a tiny ``dtype`` copy of it.

    ``layer``: a flow layer of any protocol in :data:`~invconv_core.testing.adapters.PROTOCOLS`
    (detected, or named by ``protocol``); it is not modified: a deep copy is converted to
    ``dtype``, initialised on the example (one training-mode call: data-dependent inits such as
    ActNorm's), put in evaluation mode and has its parameters perturbed by ``perturb``·N(0, 1).
    ``example``: (N, ...) inputs of the ``directions[0]`` map (floating point; the first
    ``samples`` are used; at most ``max_dims`` values per sample).

    Properties, each in each direction it applies to:
      finite               outputs and log-det finite on the example
      inverse              inverse(forward(x)) = x and forward(inverse(z)) = z
      log-det              the returned log|det| = slogdet of the dense Jacobian, per sample
      log-det pair         the inverse's log-det = −the forward's at corresponding points
      batch independence   a sample's output and log-det do not depend on the other samples
      gradcheck            output and log-det against finite differences, w.r.t. the input
                           and every parameter (float64 only)

    Returns a :class:`Report` (``.passed``, ``.failures``, ``str()``; ``.raise_if_failed()``).
    Raises ValueError (or :class:`ExampleTooLarge`) for bad arguments, before any check runs.
    """
    directions = tuple(directions)
    if not directions or any(d not in DIRECTIONS for d in directions) or len(set(directions)) != len(directions):
        raise ValueError(f"directions must be a non-empty subset of {DIRECTIONS}, got {directions}")
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be an integer >= 1, got {samples!r}")
    _validate_example(example, max_dims)
    start = time.perf_counter()
    module = _copy(layer, dtype)
    adapter = layer_adapter(module, protocol)
    report = Report(type(layer).__name__, adapter.protocol, str(dtype).replace("torch.", ""))
    if "inverse" in directions and not adapter.has_inverse:
        report.results.append(CheckResult("inverse", "inverse", False,
                                          detail="the layer has no inverse; pass directions=('forward',)"))
        directions = tuple(d for d in directions if d != "inverse")
        if not directions:
            report.seconds = time.perf_counter() - start
            return report
    tol = tolerance(dtype)
    x = _tiny_batch(example, samples, dtype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        prepared = _guarded("finite", directions[0], lambda: _prepare(
            module, seed, perturb, initialize, lambda: adapter.map(directions[0])(x)))
        if prepared:  # the initialising call raised: nothing else can run
            report.results += prepared
        else:
            report.results += _layer_results(adapter, directions, x, tol, gradcheck and dtype == torch.float64)
            if gradcheck and dtype != torch.float64:
                report.results.append(CheckResult("gradcheck", "both", None, detail="gradcheck needs float64"))
    report.seconds = time.perf_counter() - start
    return report


def _guarded(prop: str, direction: str, thunk: Callable[[], object]) -> list[CheckResult]:
    """The results of ``thunk`` (a CheckResult, a list of them, or None: nothing to report);
    an exception it raises is a failure of the property, its message in one line."""
    try:
        out = thunk()
    except Exception as err:  # noqa: BLE001 - whatever the checked code raises is the finding
        first = (str(err).strip().splitlines() or [""])[0]
        return [CheckResult(prop, direction, False, detail=f"raised {type(err).__name__}: {first}")]
    return [] if out is None else out if isinstance(out, list) else [out]


def _layer_results(adapter: LayerAdapter, directions, x, tol, gradcheck: bool) -> list[CheckResult]:
    both = adapter.has_inverse and len(directions) == 2
    points, outputs = {}, {}

    def evaluate(d, inp):
        with torch.no_grad():
            outputs[d] = adapter.map(d)(inp)
        points[d] = inp
        out, ld = outputs[d]
        ok = bool(torch.isfinite(out).all() and torch.isfinite(ld).all())
        return CheckResult("finite", d, ok, detail="" if ok else
                           f"{int((~torch.isfinite(out)).sum())} non-finite outputs, "
                           f"{int((~torch.isfinite(ld)).sum())} non-finite log-dets")

    results = _guarded("finite", directions[0], lambda: evaluate(directions[0], x))
    if both and "forward" in outputs:
        # an inverse that raises (NotImplementedError included) fails as the inverse
        results += _guarded("inverse", "inverse", lambda: evaluate("inverse", outputs["forward"][0]))
    if both and "inverse" in outputs:
        def identities():
            back = outputs["inverse"][0]
            with torch.no_grad():
                again, _ = adapter.map("forward")(back)
            return [_compare("inverse", "inverse∘forward", back, x, tol, "inverse(forward(x))", "x"),
                    _compare("inverse", "forward∘inverse", again, outputs["forward"][0], tol,
                             "forward(inverse(z))", "z")]
        results += _guarded("inverse", "both", identities)

    def logdet(d):
        fn, inp = adapter.map(d), points[d]
        dets, signs = [], []
        for i in range(len(inp)):
            lad, sign = _slogdet(lambda v: fn(v)[0], inp, i)
            dets.append(lad)
            signs.append(sign)
        if 0 in signs:
            return CheckResult("log-det", d, False, detail=f"the Jacobian of sample {signs.index(0)} is singular")
        return _compare("log-det", d, outputs[d][1], torch.stack(dets).detach(), tol,
                        "log|det|", "slogdet of the dense Jacobian")

    for d in points:
        results += _guarded("log-det", d, lambda: logdet(d))
    if len(points) == 2:
        results.append(_compare("log-det pair", "inverse", outputs["inverse"][1], -outputs["forward"][1], tol,
                                "inverse log-det", "−forward log-det"))
    for d in points:
        results += _guarded("batch independence", d,
                            lambda: _batch_independence(adapter.map(d), points[d], outputs[d], tol, d))
    if gradcheck:
        for d in points:
            results += _guarded("gradcheck", d, lambda: _gradcheck(adapter, d, points[d]))
    return results


def _batch_independence(fn, x, full, tol, direction) -> CheckResult:
    """Each sample alone, and the batch in reverse order, against the full batch."""
    out, ld = full
    with torch.no_grad():
        alone = [fn(x[i:i + 1]) for i in range(len(x))]
        rev_out, rev_ld = fn(x.flip(0))
    got_out = torch.cat([a[0] for a in alone])
    got_ld = torch.cat([a[1] for a in alone])
    results = [_compare("batch independence", direction, got_out, out, tol, "output alone", "in the batch"),
               _compare("batch independence", direction, got_ld, ld, tol, "log-det alone", "in the batch"),
               _compare("batch independence", direction, rev_out.flip(0), out, tol,
                        "output in the reversed batch", "in the batch"),
               _compare("batch independence", direction, rev_ld.flip(0), ld, tol,
                        "log-det in the reversed batch", "in the batch")]
    return max(results, key=lambda r: r.measured)


# -- models ---------------------------------------------------------------------------------------

def check_flow_model(model, example: torch.Tensor, *, protocol: str = "auto",
                     dtype: torch.dtype = torch.float64, samples: int = 2, perturb: float = 0.05,
                     seed: int = 0, initialize: bool = True, n_bins: int = 256,
                     dequantize: Callable | None = None, entropy_steps: int = 300,
                     max_dims: int = DENSE_LIMIT) -> Report:
    """Check a whole density model (data → latent, a prior, a sampler) on a ``dtype`` copy.

    ``model``: our MultiScaleFlow, an nflows ``Flow``, a normflows ``NormalizingFlow`` or a zuko
    ``Flow`` (detected, or named by ``protocol``); not modified. ``example``: (N, ...) data
    points (dequantized: for our models in [0, 1)).

    Properties:
      density          log p(x) = slogdet of the dense Jacobian of the whole data→latent map +
                       the prior's log-density, per sample
      log-det          the map's returned log-det = that slogdet
      prior            the model's prior term = torch.distributions' Normal log-density from the
                       prior's own mean and scale (SKIP where the prior is not Gaussian)
      inverse          the sampling path inverts the map: g(f(x)) = x on the example
      sampling         on the model's own samples: finite, and g(f(x_s)) = x_s
      entropy bound    a copy trained ``entropy_steps`` Adam steps on pixels uniform on two
                       adjacent levels of ``n_bins`` (entropy exactly 1 bit/dim), dequantized by
                       ``dequantize(k, n_bins, generator=)`` (default: ours), scores at least
                       1 − 6 standard errors bits/dim on held-out data (a dequantization over
                       part of a bin lets it go below). ``entropy_steps=0`` skips it.
    """
    _validate_example(example, max_dims)
    if not isinstance(n_bins, int) or n_bins < 2:
        raise ValueError(f"n_bins must be an integer >= 2, got {n_bins!r}")
    start = time.perf_counter()
    original = model
    model = _copy(model, dtype)
    adapter = model_adapter(model, protocol)
    report = Report(type(original).__name__, adapter.protocol, str(dtype).replace("torch.", ""))
    tol = tolerance(dtype)
    x = _tiny_batch(example, samples, dtype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        prepared = _guarded("density", "model", lambda: _prepare(
            model, seed, perturb, initialize, lambda: adapter.log_prob(x)))
        report.results += prepared or _model_results(adapter, x, tol)
        if entropy_steps:
            report.results += _guarded("entropy bound", "model", lambda: entropy_bound(
                original, example[0].shape, n_bins=n_bins, steps=entropy_steps, dequantize=dequantize,
                protocol=adapter.protocol, seed=seed))
    report.seconds = time.perf_counter() - start
    return report


def _model_results(adapter: ModelAdapter, x, tol) -> list[CheckResult]:
    state = {}

    def latent():
        with torch.no_grad():
            state["z"], state["ld"] = adapter.to_latent(x)
            state["log_px"] = adapter.log_prob(x)
        dets = [_slogdet(lambda v: adapter.to_latent(v)[0], x, i)[0] for i in range(len(x))]
        state["dets"] = torch.stack(dets).detach()
        return _compare("log-det", "data→latent", state["ld"], state["dets"], tol, "log|det|",
                        "slogdet of the dense Jacobian")

    def prior():
        with torch.no_grad():
            state["prior"] = adapter.prior_log_prob(x, state["z"])
            state["reference"] = adapter.reference_prior_log_prob(x, state["z"])
        if state["reference"] is None:
            return CheckResult("prior", "model", None, detail="the prior is not a Gaussian torch.distributions knows")
        return _compare("prior", "model", state["prior"], state["reference"], tol,
                        "the model's prior log-density", "torch.distributions.Normal")

    def density():
        expected = state["dets"] + (state["prior"] if state["reference"] is None else state["reference"])
        return _compare("density", "model", state["log_px"], expected, tol, "log p(x)", "slogdet + prior")

    def inverse():
        with torch.no_grad():
            back = adapter.to_data(state["z"])
        return _compare("inverse", "latent→data", back, x, tol, "g(f(x))", "x")

    def sampling():
        n = max(len(x), 8)
        with torch.no_grad():
            xs = adapter.sample(n)
            if not bool(torch.isfinite(xs).all()):
                return CheckResult("sampling", "latent→data", False,
                                   detail=f"{int((~torch.isfinite(xs)).sum())} non-finite values in {n} samples")
            zs = adapter.to_latent(xs)[0]
            # A sample the sampler pushed to where the data→latent map overflows (a logit of a
            # sigmoid that rounded to 0 or 1: untrained models with pointwise activations do)
            # cannot be mapped back in floating point; it is counted, not compared. With none
            # left the property is not evaluated (the inverse is still checked on the example).
            inside = torch.isfinite(zs).reshape(n, -1).all(1)
            if not bool(inside.any()):
                return CheckResult("sampling", "latent→data", None,
                                   detail=f"none of {n} samples lies where the data→latent map is finite "
                                          f"(the sampler saturates); g(f(x)) = x is checked on the example")
            again = adapter.to_data(zs[inside])
        result = _compare("sampling", "latent→data", again, xs[inside], tol, "g(f(x_s))", "x_s")
        if not bool(inside.all()):
            result.note = (f"{int((~inside).sum())} of {n} samples lie where the data→latent map is not "
                           f"finite (saturated); compared the other {int(inside.sum())}")
        return result

    results = _guarded("log-det", "data→latent", latent)
    if "dets" in state:
        results += _guarded("prior", "model", prior)
        if "prior" in state:
            results += _guarded("density", "model", density)
        results += _guarded("inverse", "latent→data", inverse)
    results += _guarded("sampling", "latent→data", sampling)
    return results


def entropy_bound(model, shape, *, n_bins: int = 256, steps: int = 300, dequantize: Callable | None = None,
                  protocol: str = "auto", seed: int = 0, n_train: int = 4000, n_test: int = 2000,
                  batch_size: int = 100, lr: float = 3e-3) -> CheckResult:
    """Train a float32 copy of ``model`` on images of ``shape`` whose values are independent and
    uniform on two adjacent levels {n_bins/2, n_bins/2 + 1} (exactly 1 bit/dim of entropy),
    dequantized by ``dequantize``; its held-out bits/dim must be ≥ 1 − 6·SE (SE: the standard
    error of the per-image mean). No continuous density can beat the discrete entropy in
    expectation once the noise fills each whole bin; noise over part of a bin lets it."""
    from ..flows.bpd import bits_per_dim
    from ..flows.bpd import dequantize as ours
    deq = dequantize or ours
    copy_ = _copy(model, torch.float32)
    adapter = model_adapter(copy_, protocol)
    g = torch.Generator().manual_seed(seed)
    level = n_bins // 2 - 1
    draw = lambda n: level + torch.randint(0, 2, (n, *shape), generator=g).float()  # noqa: E731
    train, test = draw(n_train), draw(n_test)
    dims = int(torch.Size(shape).numel())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        copy_.train()
        with torch.no_grad():
            adapter.log_prob(deq(train[:200], n_bins, generator=g))  # data-dependent inits
        opt = torch.optim.Adam(copy_.parameters(), lr=lr)
        for step in range(steps):
            idx = torch.randint(0, n_train, (batch_size,), generator=g)
            loss = bits_per_dim(adapter.log_prob(deq(train[idx], n_bins, generator=g)), dims, n_bins).mean()
            if not torch.isfinite(loss):
                return CheckResult("entropy bound", "model", False,
                                   detail=f"training diverged: non-finite loss at step {step}")
            opt.zero_grad()
            loss.backward()
            opt.step()
        copy_.eval()
        with torch.no_grad():
            per_image = bits_per_dim(adapter.log_prob(deq(test, n_bins, generator=g)), dims, n_bins)
    bpd, se = float(per_image.mean()), float(per_image.std()) / math.sqrt(n_test)
    floor = 1.0 - 6 * se
    relation = ">=" if bpd >= floor else "<"
    return CheckResult("entropy bound", "model", bpd >= floor, bpd, floor,
                       detail=f"held-out bits/dim after {steps} steps {relation} 1 − 6 SE (entropy 1 bit/dim, "
                              f"SE {se:.4f})", measure="held-out bits/dim", limit_name="floor")
