"""Reading training checkpoints back, with one clear error for every way a file can be wrong,
and the random-number state they carry.

A checkpoint written by :func:`invconv_core.flows.fit` holds only tensors, numbers, strings,
lists and dicts, so it is loaded with ``torch.load(..., weights_only=True)``: opening a
checkpoint never runs code from the file.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from .errors import CheckpointError
from .models import FlowConfig, MultiScaleFlow, allocate_flow

__all__ = ["load_checkpoint", "load_flow", "load_weights", "rng_state", "set_rng_state"]

_REQUIRED = ("config", "model")
_NUMPY_ARRAY_GLOBALS = [np.ndarray, np.dtype, type(np.dtype(np.uint32)),
                        getattr(np, "_core", np.core).multiarray._reconstruct]


def load_checkpoint(path: str, device="cpu", required=_REQUIRED) -> dict:
    """The checkpoint dict at ``path``; FileNotFoundError or :class:`CheckpointError` naming
    the file and what is wrong (not a checkpoint, truncated, missing entries)."""
    import os
    import stat
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block torch.load forever
            raise CheckpointError(f"{path}: not a regular file (a directory, FIFO or device); "
                                  f"expected a checkpoint file")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: checkpoint not found") from None
    try:
        # numpy's array type: checkpoints of versions before 0.1.0's library tools stored the
        # numpy RNG state as an array (plain data; allowing it runs no code from the file)
        with torch.serialization.safe_globals(_NUMPY_ARRAY_GLOBALS):
            ck = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: checkpoint not found") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file") from None
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ... here
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        # torch's advice to retry with weights_only=False is wrong for a corrupt file
        detail = type(err).__name__ + (f": {first[:160]}" if first and "weights_only" not in first else "")
        raise CheckpointError(f"{path}: not a readable invconv-train checkpoint (truncated, "
                              f"corrupt or another kind of file; {detail})") from None
    if not isinstance(ck, dict) or any(k not in ck for k in required):
        found = sorted(ck) if isinstance(ck, dict) else type(ck).__name__
        raise CheckpointError(f"{path}: not an invconv-train checkpoint (expected a dict with "
                              f"{', '.join(map(repr, required))}; found {found})")
    return ck


def load_flow(path: str, device="cpu") -> MultiScaleFlow:
    """The flow model saved in a checkpoint written by :func:`fit` (``best.pt`` or ``last.pt``),
    in eval mode on ``device``."""
    ck = load_checkpoint(path, device)
    model = flow_from_checkpoint(ck, path).to(device)
    return model.eval()


def flow_from_checkpoint(ck: dict, path: str) -> MultiScaleFlow:
    try:
        config = FlowConfig.from_dict(ck["config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: its model config is not valid ({err})") from None
    try:
        model = allocate_flow(config)
    except ValueError as err:  # a crafted or foreign config: a size this machine cannot hold
        raise CheckpointError(f"{path}: {err}") from None
    return load_weights(model, ck, path)


def load_weights(model: MultiScaleFlow, ck: dict, path: str) -> MultiScaleFlow:
    """``model`` with the weights of checkpoint ``ck`` (read from ``path``) loaded;
    :class:`CheckpointError` naming the file when they do not fit the model's config."""
    try:
        model.load_state_dict(ck["model"])
    except (RuntimeError, TypeError, AttributeError) as err:
        first = str(err).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        older = (" A checkpoint of a k×k model written by invconv_core < 0.2.0 (steps with a "
                 "channel reversal instead of the 1×1 convolution) cannot be loaded: retrain it."
                 if model.config.model != "glow" else "")
        raise CheckpointError(f"{path}: the saved weights do not match the saved config "
                              f"{model.config.to_dict()} ({detail}).{older}") from None
    bad = [name for name, t in ck["model"].items()
           if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:  # it would sample NaN images and report them as a success
        raise CheckpointError(f"{path}: the saved weights hold NaN or inf ({', '.join(bad[:3])}"
                              f"{f' and {len(bad) - 3} more' if len(bad) > 3 else ''})")
    return model


def rng_state() -> dict:
    """Every random-number state a training step reads, as tensors and plain values (so the
    checkpoint loads with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                      float(cached)],
            "python": list(random.getstate()),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else keys  # an ndarray in older files
    np.random.set_state((kind, keys.astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]  # a tuple in older files, a list now
    random.setstate((version, tuple(internal), gauss))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
