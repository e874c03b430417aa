"""One writer per output directory: an advisory lock held for a whole run of ``invconv-train``,
``invconv-compare`` or ``invconv-classify`` (and of :func:`fit`, :func:`compare`,
:func:`train_classifier` called from Python).

The lock is ``fcntl.flock`` on the file :data:`LOCK_NAME` in the directory, which holds the
holder's PID. The operating system releases it when the holder exits, however it exits
(``kill -9`` included), so a crashed run never leaves a stale lock: the file stays, the lock
does not. A second writer fails at once with :class:`RunLockedError` naming the directory and
the holder's PID. Everything that deletes or replaces files of a run (the removal of stale
temporary files, ``overwrite``) happens under the lock.

On a system without ``fcntl`` (Windows) no lock is taken.
"""

from __future__ import annotations

import contextlib
import os

from .errors import RunLockedError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

__all__ = ["LOCK_NAME", "run_lock", "refuse_if_locked"]

#: The lock file's name inside a locked directory.
LOCK_NAME = ".invconv-lock"


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"PID {text}" if text.isdigit() else "PID unknown"


def _take(fd: int, kind: int, directory: str, what: str) -> None:
    """flock ``kind`` without waiting; :class:`RunLockedError` naming the holder if held."""
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RunLockedError(f"{directory}: another process ({_holder(fd)}) is writing to this "
                             f"{what}; wait for it to finish, or choose another directory") from None


def refuse_if_locked(directory: str, what: str = "run directory") -> None:
    """:class:`RunLockedError` if another process holds the lock of ``directory``, found
    without creating or writing anything there (a refused run leaves the directory as it was)."""
    if fcntl is None:  # pragma: no cover
        return
    try:
        fd = os.open(os.path.join(directory, LOCK_NAME), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return  # no lock file: nobody has locked it
    try:
        _take(fd, fcntl.LOCK_SH, directory, what)
    finally:
        os.close(fd)


@contextlib.contextmanager
def run_lock(directory: str, what: str = "run directory"):
    """Holds the exclusive lock of ``directory`` (which must exist) for the ``with`` block;
    :class:`RunLockedError` at once if another process holds it."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    path = os.path.join(directory, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        _take(fd, fcntl.LOCK_EX, directory, what)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
