"""Files the CLIs write: checkpoints and JSON atomically (temp file + rename, so an interrupted
write never leaves a truncated file in place), and PNG image grids without extra dependencies."""

from __future__ import annotations

import json
import os
import struct
import tempfile
import zlib

import torch

__all__ = ["atomic_save", "atomic_write_json", "save_image_grid"]


def _atomic_write(path: str, write) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path), dir=directory)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600; give it the usual permissions
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_save(obj, path: str) -> None:
    """``torch.save`` to ``path`` atomically."""
    _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_json(obj, path: str) -> None:
    _atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()))


def _png_bytes(pixels) -> bytes:
    """uint8 tensor (H, W) or (H, W, 3) → PNG file bytes."""
    h, w = pixels.shape[:2]
    color = 2 if pixels.dim() == 3 else 0
    rows = pixels.reshape(h, -1).numpy()
    raw = b"".join(b"\x00" + rows[i].tobytes() for i in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def save_image_grid(images: torch.Tensor, path: str, nrow: int = 8, pad: int = 2, scale: int = 1) -> None:
    """Images (N, C, H, W) in [0, 1], C ∈ {1, 3}, tiled into a grid PNG."""
    images = images.detach().float().clamp(0, 1).cpu()
    n, c, h, w = images.shape
    if c not in (1, 3):
        raise ValueError(f"save_image_grid needs 1 or 3 channels, got {c}")
    if scale > 1:
        images = images.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
        h, w = h * scale, w * scale
    ncol = min(nrow, n)
    nrows = (n + ncol - 1) // ncol
    grid = torch.ones(c, nrows * (h + pad) + pad, ncol * (w + pad) + pad)
    for i in range(n):
        r, q = divmod(i, ncol)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = images[i]
    pixels = (grid * 255).round().to(torch.uint8)
    pixels = pixels[0] if c == 1 else pixels.permute(1, 2, 0).contiguous()
    data = _png_bytes(pixels)
    _atomic_write(path, lambda f: f.write(data))
