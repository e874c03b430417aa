r"""The verification oracle: the dense matrix T of a causal convolution, built entry by entry
from the definition (docs/design.md §1) in float64 NumPy, and SciPy triangular solves on it.

Nothing here calls invconv_core or torch's convolution: T[(c,i,j), (c',i',j')] collects
w[c, c', a, b] for every tap (a, b) of the padded correlation that lands on (i', j'), except the
masked entries (current tap, c' > c). Pixels are flattened in NCHW order, so ``x.reshape(N, -1)``
is a column of T.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.linalg import solve_triangular

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
            if transpose:
                sol = solve_triangular(self.Tp.T, flat[:, self.perm].T, lower=False)
            else:
                sol = solve_triangular(self.Tp, flat[:, self.perm].T, lower=True)
            out[:, self.perm] = sol.T
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
