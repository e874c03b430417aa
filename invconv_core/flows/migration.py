"""The one migration rule for every settings record a run saves -- a run's ``train_config`` and
``config`` (``FlowConfig``) in ``last.pt``/``best.pt``, ``compare.json``'s ``defining``,
``metrics.json`` (``TrainResult``) -- so that adding an option never orphans the runs saved
before it:

- a field the record lacks takes **the default it had when it was added**, recorded beside the
  field (:func:`added_field`): a run saved before the field existed was computed as that
  default computes, whatever the default is today;
- a field the record lacks that records no such default (one every version wrote) makes the
  record damaged: :class:`SettingsError` naming the file and the field;
- a field this version does not know is an error naming it (a newer version's run: continuing
  it here would silently drop what the field changes);
- a value of the wrong type (a string for an integer, ``null`` for a list) is an error naming
  the field, before anything reads it.

Adding a field to a saved dataclass: ``name: T = added_field(default, version="x.y.z")`` (and
``default_then=`` when runs saved before it behaved otherwise than the new default).
"""

from __future__ import annotations

import dataclasses

from .errors import FlowError

__all__ = ["added_field", "added_in", "migrate", "SettingsError"]

_ADDED = "invconv_added"       # field metadata: (version, default it had when added)
_SAME = object()


class SettingsError(FlowError, ValueError):
    """A saved settings record that cannot be read as this version's settings."""


def added_field(default, *, version: str, default_then=_SAME):
    """A dataclass field added in ``version`` with ``default``; records saved before it take
    ``default_then`` (by default: ``default``)."""
    return dataclasses.field(default=default, metadata={
        _ADDED: (version, default if default_then is _SAME else default_then)})


def added_in(cls) -> dict:
    """``{field: (version, default then)}`` of the fields of ``cls`` added after its first
    saved version."""
    return {f.name: f.metadata[_ADDED] for f in dataclasses.fields(cls) if _ADDED in f.metadata}


_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,),
          "dict": (dict,), "tuple": (list, tuple), "list": (list, tuple)}


def _type_ok(annotation, value) -> bool:
    """``value`` is of the (string) annotation's type: ``int``, ``float | None``, ... (an
    annotation this does not know accepts anything)."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    allowed = []
    for part in (p.strip() for p in text.split("|")):
        if part == "None":
            if value is None:
                return True
            continue
        if part not in _TYPES:
            return True
        allowed.append(part)
    for part in allowed:
        if part in ("int", "float") and isinstance(value, bool):
            continue
        if isinstance(value, _TYPES[part]):
            return True
    return False


def migrate(cls, saved, what: str, *, only=None, renamed=None) -> dict:
    """The record ``saved`` (a dict as ``dataclasses.asdict`` wrote it) as keyword arguments of
    ``cls``'s current fields (``only``: of those fields alone), by the rule above. ``renamed``:
    ``{old name: new name}`` of renamed fields. ``what`` names the record in errors (its file and
    key). Raises :class:`SettingsError`."""
    if not isinstance(saved, dict):
        raise SettingsError(f"{what}: expected a JSON object of {cls.__name__} settings, found "
                            f"{type(saved).__name__}")
    saved = dict(saved)
    for old, new in (renamed or {}).items():
        if old in saved and new not in saved:
            saved[new] = saved.pop(old)
    fields = [f for f in dataclasses.fields(cls) if only is None or f.name in only]
    known = {f.name for f in fields}
    unknown = sorted(k for k in saved if k not in known)
    if unknown:
        raise SettingsError(f"{what}: unknown setting(s) {', '.join(map(str, unknown))} (saved by "
                            f"another version of invconv_core?)")
    out = {}
    for f in fields:
        if f.name in saved:
            value = saved[f.name]
            if not _type_ok(f.type, value):
                raise SettingsError(f"{what}: setting '{f.name}' must be {f.type}, found "
                                    f"{type(value).__name__} {value!r:.40}")
            out[f.name] = value
        elif _ADDED in f.metadata:
            out[f.name] = f.metadata[_ADDED][1]
        else:
            raise SettingsError(f"{what}: lacks the setting '{f.name}' (every version writes it: "
                                f"the record is damaged)")
    return out
