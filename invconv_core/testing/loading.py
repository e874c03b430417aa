"""``MODULE:FACTORY`` specs of ``invconv-verify --layer/--model``: the user's code, loaded."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import torch

__all__ = ["FactoryError", "load_factory", "make_subject", "parse_shape"]


class FactoryError(ValueError):
    """A spec that cannot be loaded or called; the message names the spec and what was expected."""


def load_factory(spec: str):
    """``MODULE:NAME`` → the object ``NAME`` of ``MODULE``: a dotted module importable from the
    current directory or sys.path (``mypkg.layers:make``), or a Python file (``path/to/f.py:make``).
    ``NAME`` may be dotted (``module:Class.build``)."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise FactoryError(f"expected MODULE:FACTORY (e.g. mypkg.layers:make_layer or layers.py:make_layer), got {spec!r}")
    try:
        if module_name.endswith(".py") or os.sep in module_name:
            if not os.path.isfile(module_name):
                raise FactoryError(f"no file {module_name!r}")
            name = "_invconv_verify_" + os.path.splitext(os.path.basename(module_name))[0]
            loader_spec = importlib.util.spec_from_file_location(name, module_name)
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[name] = module
            loader_spec.loader.exec_module(module)
        else:
            if "" not in sys.path and os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())  # as `python -c` would find a module here
            module = importlib.import_module(module_name)
    except FactoryError:
        raise
    except Exception as err:  # noqa: BLE001 - the user's module raised while importing
        first = (str(err).strip().splitlines() or [""])[0]
        raise FactoryError(f"importing {module_name!r} raised {type(err).__name__}: {first}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise FactoryError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def parse_shape(text: str) -> tuple[int, ...]:
    """``"2,3,4,4"`` (or ``2x3x4x4``) → (2, 3, 4, 4): positive integers, a batch first."""
    parts = text.replace("x", ",").split(",")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"expected comma-separated positive integers N,C,H,W, got {text!r}") from None
    if len(shape) < 2 or any(s < 1 for s in shape):
        raise ValueError(f"expected at least two positive integers (a batch, then the sample's shape), got {text!r}")
    return shape


def make_subject(factory, shape: tuple[int, ...] | None, distribution: str, seed: int):
    """Call ``factory`` (or take it as it is, if it is already a layer or model) → (subject,
    example). A factory may return ``(subject, example)``; otherwise the example is drawn from
    ``distribution`` ("normal": N(0, 1); "uniform": U(0.05, 0.95), for data in (0, 1)) with
    ``shape``."""
    subject = factory
    if callable(factory) and not isinstance(factory, (torch.nn.Module, torch.distributions.Transform)):
        try:
            subject = factory()
        except Exception as err:  # noqa: BLE001
            first = (str(err).strip().splitlines() or [""])[0]
            raise FactoryError(f"calling the factory raised {type(err).__name__}: {first}") from None
    example = None
    if isinstance(subject, tuple) and len(subject) == 2 and torch.is_tensor(subject[1]):
        subject, example = subject
    if example is None:
        if shape is None:
            raise FactoryError("--input-shape is required unless the factory returns (layer, example)")
        g = torch.Generator().manual_seed(seed)
        example = (torch.randn(shape, generator=g) if distribution == "normal"
                   else 0.05 + 0.9 * torch.rand(shape, generator=g))
    return subject, example
