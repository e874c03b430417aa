"""Files the tools write: checkpoints and JSON atomically (temp file + rename, so an interrupted
write never leaves a truncated file in place), and PNG image grids without extra dependencies.

A temporary file is named ``.tmp-<name>XXXXXXXX`` beside its target. A process killed during a
write (``kill -9``) cannot remove it; :func:`remove_stale_temp_files` does, when the next run
starts in that directory (such files are never read).

The target decides how it is written: a regular file (or a new one) is replaced atomically; a
symlink is followed and its target replaced atomically, the link left in place; a target that
is not a regular file -- a character device (``/dev/null``), a FIFO, a terminal,
``/dev/stdout`` -- is written through, never replaced by a regular file (such a write is not
atomic; it cannot be). A directory or a socket is refused with an error naming the path."""

from __future__ import annotations

import json
import os
import stat
import struct
import tempfile
import zlib

import torch

__all__ = ["atomic_save", "atomic_write_json", "atomic_write_bytes", "save_image_grid",
           "remove_stale_temp_files"]

_TEMP_PREFIX = ".tmp-"


def _write_target(path: str) -> tuple[str, bool]:
    """``(where, through)``: the file to write and whether to write through it in place
    (not a regular file) rather than replace it atomically."""
    try:
        mode = os.stat(path).st_mode  # follows symlinks
    except FileNotFoundError:
        mode = None  # a new file, or a dangling symlink: created at the link's target
    except NotADirectoryError:
        raise NotADirectoryError(f"{path}: a parent of the output file is not a directory") from None
    if mode is not None and stat.S_ISDIR(mode):
        raise IsADirectoryError(f"{path}: is a directory, not a file to write")
    if mode is not None and stat.S_ISSOCK(mode):
        raise OSError(f"{path}: is a socket; expected a file, a device or a FIFO to write to")
    real = os.path.realpath(path)
    # /dev/stdout and /dev/fd/N resolve into /proc: whatever they point at is the caller's
    # stream (a terminal, a pipe, a file the shell opened), written in place
    if (mode is not None and not stat.S_ISREG(mode)) or real.startswith("/proc/"):
        return path, True
    return real, False


def _atomic_write(path: str, write) -> None:
    try:
        _write(path, write)
    except OSError as err:
        if err.filename is not None or err.errno is None:
            raise
        # a failed write (disk full, I/O error) carries no file name: name the one being written
        raise type(err)(err.errno, f"cannot write {path}: {err.strerror}") from None


def _write(path: str, write) -> None:
    target, through = _write_target(path)
    if through:
        with open(target, "wb") as f:
            write(f)
        return
    directory = os.path.dirname(target)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_TEMP_PREFIX + os.path.basename(target), dir=directory)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)  # a replaced file keeps its permissions
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask  # mkstemp makes it 0600; give a new file the usual permissions
    os.chmod(tmp, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_save(obj, path: str) -> None:
    """``torch.save`` to ``path`` atomically."""
    _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_bytes(data: bytes, path: str) -> None:
    """``data`` to ``path`` atomically (a PNG, a markdown table, ...)."""
    _atomic_write(path, lambda f: f.write(data))


def atomic_write_json(obj, path: str) -> None:
    """Strict JSON (RFC 8259: no NaN/Infinity tokens) to ``path`` atomically. A non-finite
    number is a ValueError naming the path, raised before anything is written."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"
    except ValueError as err:
        raise ValueError(f"{path}: refusing to write a non-finite number into JSON ({err})") from None
    _atomic_write(path, lambda f: f.write(text.encode()))


def remove_stale_temp_files(directory: str, names) -> list[str]:
    """Deletes the temporary files that interrupted atomic writes of ``names`` (basenames) left
    in ``directory``; returns their paths. Only a crashed writer leaves them: call it when a
    run starts, before anything writes there."""
    removed = []
    prefixes = tuple(_TEMP_PREFIX + n for n in names)
    for entry in os.listdir(directory):
        path = os.path.join(directory, entry)
        if entry.startswith(prefixes) and os.path.isfile(path):
            os.unlink(path)
            removed.append(path)
    return removed


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
    atomic_write_bytes(_png_bytes(pixels), path)


def save_line_plot(path: str, draw, xlabel: str, ylabel: str, title: str) -> None:
    """A one-axes matplotlib figure (6.4×4.2 in, 120 dpi) written atomically as a PNG:
    ``draw(ax)`` plots the lines (with labels, for the legend); axis labels, a light grid and
    the legend are added here. matplotlib is imported here (an optional extra), on the Agg
    backend."""
    import io as _io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    try:
        draw(ax)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend()
        buf = _io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=120)
    finally:
        plt.close(fig)
    atomic_write_bytes(buf.getvalue(), path)
