r"""Dequantization and bits per dimension: the one audited place.

Data with ``n_bins`` levels ``k ∈ {0, …, n_bins−1}^D`` is dequantized to
``x = (k + u) / n_bins ∈ [0, 1)^D`` with ``u ~ U[0, 1)^D`` (uniform dequantization). A model
gives a density ``p(x)`` on ``[0, 1)^D``; the probability of the cell of volume
``n_bins^{−D}`` around x is then ≈ ``p(x)·n_bins^{−D}`` (a lower bound in expectation over u),
so per image

    bpd = −(log p(x) − D·log(n_bins)) / (D·log 2),     D = C·H·W.

Per image, not per batch: ``D`` counts the dimensions of one image, and the mean of the
per-image values is the reported number.
"""

from __future__ import annotations

import math

import torch

__all__ = ["dequantize", "quantize", "bits_per_dim"]


def dequantize(k: torch.Tensor, n_bins: int, generator: torch.Generator | None = None,
               noise: bool = True) -> torch.Tensor:
    """Integer-valued ``k`` (any real dtype) → ``(k + u) / n_bins``; ``u ~ U[0,1)``, or ``u = 0.5``
    when ``noise=False`` (deterministic evaluation)."""
    if noise:
        u = torch.rand(k.shape, generator=generator, device=k.device, dtype=k.dtype)
    else:
        u = torch.full_like(k, 0.5)
    return (k + u) / n_bins


def quantize(x: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Inverse of :func:`dequantize` up to the noise: ``floor(x·n_bins)`` clamped to the levels."""
    return torch.floor(x * n_bins).clamp(0, n_bins - 1)


def bits_per_dim(log_px: torch.Tensor, dims: int, n_bins: int) -> torch.Tensor:
    """Per-image bits/dim from per-image ``log p(x)`` (natural log, density on ``[0,1)^D``)."""
    if dims < 1 or n_bins < 2:
        raise ValueError(f"dims must be >= 1 and n_bins >= 2, got {dims}, {n_bins}")
    return -(log_px - dims * math.log(n_bins)) / (dims * math.log(2.0))
