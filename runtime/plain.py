"""Envelopes as plain data (JSON-ready), the form the exported JSON Schema describes.

``{"header": {...}, "message": "<class name>" | None, "fields": {...} | None}`` with
enums by member name, tensors as ``{"dtype": ..., "shape": [...]}`` and None as null.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from typing import Any

import torch

from .bindings import bindings_of
from .errors import Violation
from .wire import DTYPE_BY_NAME, dtype_name, show


def plain_value(x: object) -> Any:
    if isinstance(x, enum.Enum):
        return x.name
    if isinstance(x, torch.Tensor):
        return {"dtype": dtype_name(x.dtype), "shape": list(x.shape)}
    return x


def _fields(obj: Any) -> dict[str, Any]:
    return {f.name: plain_value(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def to_plain(header: Any, msg: Any | None) -> dict[str, Any]:
    """Plain data for a (header, message) pair of any generated protocol."""
    return {
        "header": _fields(header),
        "message": type(msg).__name__ if msg is not None else None,
        "fields": _fields(msg) if msg is not None else None,
    }


def _tensor_from_plain(value: Mapping[str, Any]) -> torch.Tensor | None:
    dtype = DTYPE_BY_NAME.get(str(value.get("dtype")))
    shape = value.get("shape")
    if dtype is None or not isinstance(shape, list) or not all(type(d) is int for d in shape):
        return None
    if any(d < 0 for d in shape) or math.prod(shape) > _PLAIN_TENSOR_LIMIT:
        return None
    fill = value.get("fill", 0)
    data = value.get("data")
    try:
        if data is not None:
            return torch.tensor(data, dtype=dtype.torch_dtype).reshape(shape)
        return torch.full(shape, fill, dtype=dtype.torch_dtype)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        return None


#: Plain-data tensors are test fixtures, not payloads: keep them small.
_PLAIN_TENSOR_LIMIT = 1 << 20


def value_from_plain(hint: str, value: Any, enums: Mapping[str, Any]) -> Any:
    """Convert where the representation differs; anything unexpected stays as it is so
    that ``validate`` reports it with the proper code."""
    base = hint.replace(" | None", "").strip()
    if base.startswith("Literal["):  # a variant's discriminator: Literal[Enum.member]
        base = base.removeprefix("Literal[").split(".")[0]
    if value is None:
        return None
    if base in enums and isinstance(value, str):
        member = enums[base].__members__.get(value)
        return member if member is not None else value
    if base == "torch.Tensor" and isinstance(value, Mapping):
        t = _tensor_from_plain(value)
        return t if t is not None else value
    return value


def enums_of(protocol: Any) -> dict[str, Any]:
    """The enum classes of a generated protocol (module or ``BINDINGS``), by name."""
    return dict(bindings_of(protocol).enums)


def from_plain(protocol: Any, data: object) -> tuple[Any, Any, list[Any]]:
    """Build ``(header, message, violations)`` from plain data for a generated ``protocol``.

    Violations cover what only plain data can get wrong (``unknown_field``, an absent key
    for a ``T | None`` field, an unknown message name) plus everything ``validate`` finds.
    """
    bindings = bindings_of(protocol)
    enums = dict(bindings.enums)
    violations: list[Any] = []
    if not isinstance(data, Mapping):  # JSON null, a list, a string: one violation, not a crash
        violations.append(
            Violation(
                "type",
                "envelope",
                "a mapping of header, message, fields",
                show(data),
                "plain envelope shape",
            )
        )
        data = {}

    def build(cls: Any, values: Mapping[str, Any], where: str) -> Any:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key in values:
            if key not in fields:
                violations.append(
                    Violation(
                        "unknown_field",
                        f"{where}{key}",
                        "no such field",
                        show(values[key]),
                        f"fields of {cls.__name__}",
                    )
                )
        for name, f in fields.items():
            if name in values:
                kwargs[name] = value_from_plain(_hint(cls, name, str(f.type)), values[name], enums)
            elif f.default is dataclasses.MISSING:
                if "None" in str(f.type):
                    violations.append(
                        Violation(
                            "missing",
                            f"{where}{name}",
                            "an explicit value or null",
                            "absent key",
                            "T | None fields are always given",
                        )
                    )
                kwargs[name] = None
        return cls(**kwargs)

    def mapping(key: str) -> Mapping[str, Any]:
        value = data.get(key)
        if value is None or isinstance(value, Mapping):
            return value or {}
        violations.append(Violation("type", key, "a mapping", show(value), "plain envelope shape"))
        return {}

    def _hint(cls: Any, name: str, hint: str) -> str:
        # a field the plan forbids is annotated ``None`` in its variant: convert the value as
        # the other variants type it, so validate reports it as forbidden, not mistyped
        if hint != "None":
            return hint
        for other in bindings.variants.get(cls, ()):
            if other is not cls:
                f = {f.name: f for f in dataclasses.fields(other)}.get(name)
                if f is not None and str(f.type) != "None":
                    return str(f.type)
        return hint

    for key in data:
        if key not in ("header", "message", "fields"):
            violations.append(
                Violation(
                    "unknown_field",
                    key,
                    "header, message, fields",
                    show(data[key]),
                    "plain envelope shape",
                )
            )
    hdr = mapping("header")
    header = build(bindings.header, hdr, "header.")
    name = data.get("message")
    msg = None
    if name is None:
        for key, value in mapping("fields").items():
            violations.append(
                Violation(
                    "unknown_field",
                    str(key),
                    "no fields without a message",
                    show(value),
                    "plain envelope shape",
                )
            )
    else:
        cls = bindings.messages.get(name) if isinstance(name, str) else None
        if cls is None:
            violations.append(
                Violation(
                    "type",
                    "message",
                    "one of " + ", ".join(bindings.messages),
                    show(name),
                    "message class",
                )
            )
        else:
            msg = build(cls, mapping("fields"), "")
    ids = tuple((k, v if type(v := hdr.get(k)) is int else None) for k in bindings.roles.fields)
    found = [dataclasses.replace(v, ids=ids) for v in violations]
    found.extend(bindings.validate(msg, header))
    return header, msg, found
