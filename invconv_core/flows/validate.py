"""Checks of user input, shared by the library's config values and the command-line parsers, so
a bad value gets the same one-line message before any work starts, whichever way it came in.

The ``*_option`` factories are argparse ``type=`` callables: argparse turns their
``ArgumentTypeError`` into ``prog: error: argument --name: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import math
import os
import stat
import tempfile

__all__ = ["require_int", "require_float", "require_device", "int_option", "float_option",
           "device_option", "check_output_dir", "check_output_file", "missing_directories", "SEED_MAX"]


def require_int(name: str, value, minimum: int, maximum: int | None = None) -> int:
    """``value`` if it is an int (not a bool) >= ``minimum`` (and <= ``maximum``), else
    ValueError naming ``name``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum or \
            (maximum is not None and value > maximum):
        expected = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        raise ValueError(f"{name} must be an integer {expected}, got {value!r}")
    return value


#: Seeds every tool takes: numpy seeds must fit 32 bits, with room for one per process rank.
SEED_MAX = 2**31 - 1


def require_device(value, name: str = "device") -> str:
    """``value`` if it names a device the flows can run on -- ``cpu``, or ``cuda``/``cuda:N``
    that torch sees -- else ValueError naming ``name`` (``meta``, a typo, a GPU that is not
    there: before any work, not as a traceback or a misleading error later)."""
    import torch
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError):
        raise ValueError(f"{name} must be cpu, cuda or cuda:N, got {value!r}") from None
    if device.type == "cpu":
        return str(value)
    if device.type != "cuda":
        raise ValueError(f"{name} must be cpu, cuda or cuda:N, got {value!r} (a {device.type} "
                         f"device cannot run the flows)")
    if not torch.cuda.is_available():
        why = "this torch is built without CUDA" if torch.version.cuda is None else "no GPU is visible"
        raise ValueError(f"{name} {value!r} was asked for, but torch sees no CUDA device ({why})")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ValueError(f"{name} {value!r} was asked for, but torch sees {count} CUDA device(s) "
                         f"(cuda:0 .. cuda:{count - 1})")
    return str(value)


def device_option(text: str) -> str:
    """argparse type of ``--device``: :func:`require_device`."""
    try:
        return require_device(text, "device")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).replace("device ", "", 1)
                                         if str(err).startswith("device ") else str(err)) from None


def require_float(name: str, value, minimum: float, *, strict: bool = False) -> float:
    """``value`` as a float if it is a finite real >= ``minimum`` (> with ``strict``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < minimum or (strict and value == minimum):
        raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} {minimum}, "
                         f"got {value!r}")
    return float(value)


def int_option(minimum: int, maximum: int | None = None):
    expected = f"an integer >= {minimum}" if maximum is None else f"an integer in {minimum}..{maximum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value
    parse.__name__ = expected[3:]
    return parse


def float_option(minimum: float, *, strict: bool = False):
    relation = ">" if strict else ">="

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number {relation} {minimum}, got {text!r}") from None
        if not math.isfinite(value) or value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"expected a finite number {relation} {minimum}, got {text}")
        return value
    parse.__name__ = f"number {relation} {minimum}"
    return parse


def missing_directories(path: str) -> list:
    """The directories ``os.makedirs(path)`` would create, deepest first (empty if ``path``
    exists); the parent of the last is the nearest existing ancestor."""
    missing, here = [], os.path.abspath(path)
    while not os.path.exists(here):
        missing.append(here)
        parent = os.path.dirname(here)
        if parent == here:
            break
        here = parent
    return missing


def check_output_dir(path: str, what: str = "output directory", *, create: bool = True) -> str:
    """Proves ``path`` usable as a writable directory before hours of work instead of after
    them. ``create``: make it if needed and write (and remove) a temporary file there; without,
    nothing is created -- an existing ``path`` must be a writable directory, a missing one must
    have a writable existing ancestor (the run creates it when it starts, so a run refused
    before that leaves nothing behind). Returns the path; OSError/NotADirectoryError naming it
    otherwise."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"{path}: the {what} exists and is not a directory")
    if not create:
        missing = missing_directories(path)
        existing = os.path.dirname(missing[-1]) if missing else os.path.abspath(path)
        if not os.path.isdir(existing):
            raise PermissionError(f"{path}: the {what} cannot be created or written ({existing} "
                                  f"is not a directory)")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(f"{path}: the {what} cannot be created or written "
                                  f"({existing}: permission denied)")
        return path
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as err:
        raise PermissionError(f"{path}: the {what} cannot be created or written "
                              f"({err.strerror or err})") from None
    return path


def check_output_file(path: str, what: str = "output file") -> str:
    """The directory of ``path`` must exist (or be creatable) and be writable, and ``path``
    itself must not be a directory. An existing target that is not a regular file (a device,
    a FIFO, ``/dev/stdout``) is written in place (:mod:`invconv_core.flows.io`): it must be
    writable itself."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: the {what} is a directory")
    if os.path.exists(path) and not os.path.isfile(path):
        mode = os.stat(path)
        if stat.S_ISSOCK(mode.st_mode) or not os.access(path, os.W_OK):
            raise PermissionError(f"{path}: the {what} exists and cannot be written")
        if stat.S_ISCHR(mode.st_mode) and (os.major(mode.st_rdev), os.minor(mode.st_rdev)) == _FULL_DEVICE:
            raise OSError(f"{path}: the {what} is the full device (every write fails with 'No "
                          f"space left on device')")
        return path
    folder = os.path.dirname(os.path.realpath(path))
    check_output_dir(folder, f"directory of the {what}")
    try:
        free = os.statvfs(folder)
    except (OSError, AttributeError):  # pragma: no cover - not POSIX
        return path
    if free.f_bavail == 0 and os.geteuid() != 0 or free.f_bfree == 0:
        raise OSError(f"{path}: no space left on the file system of the {what}")
    return path


#: Linux's /dev/full (character device 1, 7): always writable, every write fails with ENOSPC.
_FULL_DEVICE = (1, 7)
