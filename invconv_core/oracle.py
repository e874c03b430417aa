r"""The verification oracle, shipped with the package so that the test suite (verification/)
and ``invconv-verify`` check against the same code: the dense matrix T of a causal convolution,
built entry by entry from the definition (docs/design.md §1) in float64 NumPy, its triangular
solves (SciPy where installed, ``torch.linalg.solve_triangular`` in float64 otherwise), the
well-conditioned random operands, and the tolerance rule.

Nothing here calls invconv_core's operators or torch's convolution: T[(c,i,j), (c',i',j')]
collects w[c, c', a, b] for every tap (a, b) of the padded correlation that lands on (i', j'),
except the masked entries (current tap, c' > c). Pixels are flattened in NCHW order, so
``x.reshape(N, -1)`` is a column of T.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from ._geometry import current_tap

try:  # SciPy is optional for users (a test dependency of the repository)
    from scipy.linalg import solve_triangular as _scipy_solve_triangular
except ImportError:  # pragma: no cover - exercised where SciPy is absent
    _scipy_solve_triangular = None

__all__ = ["DenseProblem", "dense_T", "structure", "UNIT_ROUNDOFF", "make_weight",
           "operand_arrays", "solve_tolerance", "weight_grad_bound", "rel_err", "to_np",
           "ORACLE_SOLVER"]

ORACLE_SOLVER = "scipy.linalg.solve_triangular" if _scipy_solve_triangular else "torch.linalg.solve_triangular"


def _solve_triangular(A: np.ndarray, B: np.ndarray, lower: bool) -> np.ndarray:
    """A X = B for triangular A, in float64."""
    if _scipy_solve_triangular is not None:
        return _scipy_solve_triangular(A, B, lower=lower)
    return torch.linalg.solve_triangular(torch.from_numpy(A), torch.from_numpy(np.ascontiguousarray(B)),
                                         upper=not lower).numpy()


PAD = {  # (left, top) padding of each order; right/bottom are the complements
    "TL": (1, 1), "TR": (0, 1), "BL": (1, 0), "BR": (0, 0),
}


@lru_cache(maxsize=256)
def structure(C: int, H: int, W: int, kh: int, kw: int, order: str):
    """Index arrays (rows, cols, widx) with T[rows, cols] += w.flat[widx], and the permutation
    that makes T lower triangular (canonical wavefront order, channel fastest)."""
    has_left, has_top = PAD[order]
    left, top = (kw - 1) * has_left, (kh - 1) * has_top
    cur = (kh - 1 if has_top else 0, kw - 1 if has_left else 0)
    c, cp, i, j, a, b = np.meshgrid(np.arange(C), np.arange(C), np.arange(H), np.arange(W),
                                    np.arange(kh), np.arange(kw), indexing="ij")
    ii, jj = i + a - top, j + b - left
    keep = (ii >= 0) & (ii < H) & (jj >= 0) & (jj < W)
    keep &= ~((a == cur[0]) & (b == cur[1]) & (cp > c))  # the mask of the current tap
    rows = ((c * H + i) * W + j)[keep]
    cols = ((cp * H + ii) * W + jj)[keep]
    widx = (((c * C + cp) * kh + a) * kw + b)[keep]
    # canonical order: rows/cols flipped so the causal corner is top-left, raster, channel last
    ci = np.arange(H) if has_top else H - 1 - np.arange(H)
    cj = np.arange(W) if has_left else W - 1 - np.arange(W)
    key = (ci[None, :, None] * W + cj[None, None, :]) * C + np.arange(C)[:, None, None]
    perm = np.argsort(key.reshape(-1), kind="stable")
    return rows, cols, widx, perm


def dense_T(w: np.ndarray, H: int, W: int, order: str) -> np.ndarray:
    C, _, kh, kw = w.shape
    rows, cols, widx, _ = structure(C, H, W, kh, kw, order)
    T = np.zeros((C * H * W, C * H * W))
    np.add.at(T, (rows, cols), np.asarray(w, dtype=np.float64).reshape(-1)[widx])
    return T


class DenseProblem:
    """T(w, order) for H×W images with its triangular solves and the exact weight gradient."""

    def __init__(self, w: np.ndarray, H: int, W: int, order: str):
        self.w = np.asarray(w, dtype=np.float64)
        self.C, _, self.kh, self.kw = w.shape
        self.H, self.W, self.order = H, W, order
        self.rows, self.cols, self.widx, self.perm = structure(self.C, H, W, self.kh, self.kw, order)
        self.T = dense_T(self.w, H, W, order)
        self.Tp = self.T[np.ix_(self.perm, self.perm)]  # lower triangular

    def cond(self) -> float:
        return float(np.linalg.cond(self.T))

    def is_lower_in_wavefront_order(self) -> bool:
        return bool(np.array_equal(self.Tp, np.tril(self.Tp)))

    def apply(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        return (x.reshape(n, self.T.shape[0]) @ self.T.T).reshape(x.shape)

    def _solve(self, rhs: np.ndarray, transpose: bool) -> np.ndarray:
        n = rhs.shape[0]
        flat = rhs.reshape(n, self.T.shape[0]).astype(np.float64)
        out = np.empty_like(flat)
        if n:
            A = self.Tp.T if transpose else self.Tp
            out[:, self.perm] = _solve_triangular(A, flat[:, self.perm].T, lower=not transpose).T
        return out.reshape(rhs.shape)

    def solve(self, y: np.ndarray) -> np.ndarray:
        """x = T^{-1} y for y (N, C, H, W)."""
        return self._solve(y, False)

    def solve_transpose(self, g: np.ndarray) -> np.ndarray:
        """T^{-T} g."""
        return self._solve(g, True)

    def weight_grad(self, gy: np.ndarray, x: np.ndarray) -> np.ndarray:
        """gw_a = -gyᵀ (∂T/∂w_a) x summed over the batch: the exact ∂L/∂w of x = T^{-1} y."""
        n = gy.shape[0]
        g = gy.reshape(n, self.T.shape[0])[:, self.rows] * x.reshape(n, self.T.shape[0])[:, self.cols]
        gw = np.zeros(self.w.size)
        np.add.at(gw, self.widx, -g.sum(axis=0))
        return gw.reshape(self.w.shape)

    def logabsdet(self) -> float:
        sign, logdet = np.linalg.slogdet(self.T)
        return float(logdet)


# unit roundoff of each dtype the solver computes in (half types accumulate in float32)
UNIT_ROUNDOFF = {torch.float64: 2.0**-53, torch.float32: 2.0**-24,
                 torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}


def make_weight(rng: np.random.Generator, C: int, kh: int, kw: int, order: str,
                off_scale: float = 0.3, garbage_above_diagonal: bool = True) -> np.ndarray:
    """A well-conditioned weight, as a trained flow keeps it: current-tap diagonal of magnitude
    in [0.5, 2] with random sign, strictly-lower current entries and the other taps small
    (their total row mass is about ``off_scale`` of the smallest diagonal). The entries above the
    diagonal of the current tap get large random values: the operators must ignore them."""
    n = C * kh * kw
    w = rng.standard_normal((C, C, kh, kw)) * (off_scale * 0.5 / np.sqrt(n))
    a, b = current_tap(order, kh, kw)
    cur = np.tril(rng.standard_normal((C, C)) * (off_scale * 0.5 / np.sqrt(C)), -1)
    cur += np.diag(rng.uniform(0.5, 2.0, C) * rng.choice([-1.0, 1.0], C))
    if garbage_above_diagonal:
        cur += np.triu(rng.standard_normal((C, C)) * 3.0, 1)
    w[:, :, a, b] = cur
    return w


def operand_arrays(C: int, kh: int, kw: int, order: str, shape: tuple, seed: int = 0,
                   extra: int = 0) -> list[np.ndarray]:
    """[weight, y, *extra tensors of `shape`] as float64 arrays from one seeded generator: the
    weight of make_weight (well conditioned, garbage above the current tap's diagonal), then
    standard-normal arrays."""
    rng = np.random.default_rng(seed)
    return [make_weight(rng, C, kh, kw, order)] + [rng.standard_normal(shape) for _ in range(1 + extra)]


def solve_tolerance(cond: float, terms: int, dtype: torch.dtype) -> float:
    """Normwise relative error allowed for a triangular solve: the classical forward-error
    bound cond(T) · n · u (Higham, Accuracy and Stability, Thm 8.5 with n the terms summed per
    unknown), with a safety factor 4 and at least a few units in the last place."""
    u = UNIT_ROUNDOFF[torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype]
    tol = 4.0 * cond * max(terms, 1) * u
    if dtype in (torch.float16, torch.bfloat16):  # plus rounding the result to the half type
        tol += 2.0 * UNIT_ROUNDOFF[dtype]
    return tol


def weight_grad_bound(tol: float, n_sum: int, dtype: torch.dtype, gy_ref: np.ndarray,
                      x_ref: np.ndarray) -> float:
    """Largest entry error allowed for ∂L/∂w: each entry is a sum of gy·x products over the
    N·H·W pixels, so its error is at most (err(gy) + err(x) + rounding of the sum)·‖gy‖‖x‖
    (Cauchy-Schwarz), err(·) ≤ tol the solve bound."""
    u = UNIT_ROUNDOFF[torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype]
    return (2 * tol + 4 * max(n_sum, 1) * u) * float(np.linalg.norm(gy_ref)) * float(np.linalg.norm(x_ref))


def rel_err(actual: np.ndarray, expected: np.ndarray) -> float:
    den = np.linalg.norm(expected)
    num = np.linalg.norm(np.asarray(actual, dtype=np.float64) - expected)
    return float(num / den) if den > 0 else float(num)


def to_np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()
