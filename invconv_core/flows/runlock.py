"""One writer per output directory: an advisory lock held for a whole run of ``invconv-train``,
``invconv-compare`` or ``invconv-classify`` (and of :func:`fit`, :func:`compare`,
:func:`train_classifier` called from Python).

The lock is ``fcntl.flock`` on the file :data:`LOCK_NAME` in the directory, which holds the
holder's PID. The operating system releases it when the holder exits, however it exits
(``kill -9`` included), so a crashed run never leaves a stale lock: the file stays, the lock
does not. A second writer fails at once with :class:`RunLockedError` naming the directory and
the holder's PID. Everything that deletes or replaces files of a run (the removal of stale
temporary files, ``overwrite``) happens under the lock.

Three rules make the lock hold against other processes and the file system:

- The lock file is opened without following a symbolic link (``O_NOFOLLOW``) and must be a
  regular file: a planted link named ``.invconv-lock`` cannot make the lock truncate or create
  a file elsewhere (it is refused, naming it).
- A lock counts only while its file is still the one at the path: after ``flock`` the holder
  checks that the path still names the inode it locked, else it retries. So a directory tree
  removed (:func:`remove_locked_tree`) while a second process waits cannot leave that process
  holding the lock of a deleted file beside a new writer.
- Locks are re-entrant within a process: a comparison holds the lock of every run directory it
  starts, resumes or deletes, and :func:`fit` inside it takes the same lock again (``flock``
  alone would refuse the process its own lock).

On a system without ``fcntl`` (Windows) no lock is taken.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from .errors import RunLockedError
from .validate import missing_directories

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

__all__ = ["LOCK_NAME", "run_lock", "refuse_if_locked", "remove_locked_tree", "LockFileError", "Claim"]

#: The lock file's name inside a locked directory.
LOCK_NAME = ".invconv-lock"

#: Directories this process holds the lock of: real path -> number of nested holders.
_HELD: dict = {}


class LockFileError(OSError):
    """The lock file of a directory is not a regular file (a symbolic link, a FIFO, ...)."""


def _key(directory: str) -> str:
    return os.path.realpath(directory)


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"PID {text}" if text.isdigit() else "PID unknown"


def _open_lock_file(path: str, flags: int) -> int:
    """The lock file opened without following a link; LockFileError naming it when it is
    anything but a regular file (a link, dangling or not, is never followed nor written)."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o666)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise LockFileError(f"{path}: the lock file is a symbolic link; remove it (a lock file "
                                f"must be a regular file)") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise LockFileError(f"{path}: the lock file is not a regular file; remove it")
    return fd


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
    if fcntl is None or _key(directory) in _HELD:  # ours: not another process's
        return
    try:
        fd = _open_lock_file(os.path.join(directory, LOCK_NAME), os.O_RDONLY)
    except LockFileError:
        raise
    except OSError:
        return  # no lock file: nobody has locked it
    try:
        _take(fd, fcntl.LOCK_SH, directory, what)
    finally:
        os.close(fd)


def _same_file(fd: int, path: str) -> bool:
    try:
        now = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)


class Claim:
    """What :func:`run_lock` yields: ``keep()`` once the run has passed every check that can
    refuse it; until then the lock file and the directories the lock created are removed at the
    end of the ``with`` block (a refusal leaves nothing behind)."""

    def __init__(self):
        self.kept = False

    def keep(self) -> None:
        self.kept = True


@contextlib.contextmanager
def run_lock(directory: str, what: str = "run directory", *, create: bool = False):
    """Holds the exclusive lock of ``directory`` for the ``with`` block and yields a
    :class:`Claim`; :class:`RunLockedError` at once if another process holds it,
    :class:`LockFileError` if its lock file is not a regular file. Re-entrant within this
    process (an inner lock's claim keeps nothing: the outer one decides).

    ``create``: make ``directory`` (and missing parents) first. Unless ``claim.keep()`` was
    called -- a run refused before it started -- the lock file (if this call created it) and
    the directories made here (if empty) are removed again, so a refusal leaves nothing behind."""
    key = _key(directory)
    claim = Claim()
    if fcntl is None or key in _HELD:
        _HELD[key] = _HELD.get(key, 0) + 1
        try:
            yield claim
        finally:
            _HELD[key] -= 1
            if not _HELD[key]:
                del _HELD[key]
        return
    made = missing_directories(directory) if create else []
    if create:
        os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, LOCK_NAME)
    fd, created = -1, False
    try:
        for _ in range(100):
            existed = os.path.lexists(path)
            fd = _open_lock_file(path, os.O_RDWR | os.O_CREAT)
            created = not existed
            _take(fd, fcntl.LOCK_EX, directory, what)
            if _same_file(fd, path):
                break
            os.close(fd)  # the file was removed or replaced meanwhile: lock the one there now
            fd = -1
        else:  # pragma: no cover - a directory being replaced 100 times in a row
            raise RunLockedError(f"{directory}: its lock file keeps being replaced; is another "
                                 f"program deleting the directory?")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _HELD[key] = 1
        try:
            yield claim
        finally:
            del _HELD[key]
            if created and not claim.kept:
                with contextlib.suppress(OSError):  # (the directory itself may be gone)
                    os.unlink(path)  # under the lock; a waiter sees the file gone and retries
                    for d in made:
                        os.rmdir(d)  # only if empty: what the run refused wrote nothing
    finally:
        if fd >= 0:
            os.close(fd)  # releases the lock
        elif made:
            for d in made:
                with contextlib.suppress(OSError):
                    os.rmdir(d)


def lock_files(root: str) -> list:
    """The directories under ``root`` (itself included) that hold a lock file."""
    found = []
    for here, dirs, files in os.walk(root, followlinks=False):
        if LOCK_NAME in files or LOCK_NAME in dirs:
            found.append(here)
    return found


def remove_locked_tree(root: str, what: str = "run directory") -> None:
    """``shutil.rmtree(root)`` under the lock of every directory inside it that has one: a
    directory that another process is writing to (a run still training) is refused with
    :class:`RunLockedError` naming it and its holder, and nothing is deleted."""
    import shutil
    if not os.path.isdir(root):
        return
    with contextlib.ExitStack() as stack:
        for directory in lock_files(root):
            stack.enter_context(run_lock(directory, what))
        shutil.rmtree(root)
