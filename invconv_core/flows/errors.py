"""Errors the flow library raises for conditions a user can fix; the command-line tools print
them as one line and exit with status 1."""

from __future__ import annotations

__all__ = ["FlowError", "CheckpointError", "RunExistsError", "RunLockedError", "TrainingDiverged",
           "CompiledCoreMissing"]


class FlowError(RuntimeError):
    """Base class of the flow library's own errors."""


class CheckpointError(FlowError, ValueError):
    """A checkpoint file that cannot be used: unreadable, not ours, or not matching its config."""


class RunExistsError(FlowError, FileExistsError):
    """The run directory already holds a run and neither resume nor overwrite was asked for."""


class RunLockedError(FlowError):
    """Another process is writing to the same output directory (it holds its lock)."""


class TrainingDiverged(FlowError):
    """The loss (or the test bits/dim) became NaN or infinite."""


class CompiledCoreMissing(FlowError):
    """The compiled core is not in use though the caller requires it."""
