"""Envelopes as plain data (JSON-ready), the form the exported JSON Schema describes.

``{"header": {...}, "message": "<class name>" | None, "fields": {...} | None}`` with
enums by member name, tensors as ``{"dtype": ..., "shape": [...]}`` and None as null.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import torch

from .wire import dtype_name


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
