"""Runtime support of the generated bindings: errors, violations and the wire format.

The ``torch.distributed`` channels (docs/runtime.md) build on these. ``Frames`` and
``Manifest`` (and ``Bindings``, the contract a generated module exports) are imported on
first use, so the compiler (which only needs the dtype table
and the errors) starts without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ContractMismatch, EnvelopeInvalid, ProtocolMismatch, Violation, WireError

if TYPE_CHECKING:
    from .bindings import Bindings, Roles
    from .wire import Frames, Manifest

__all__ = [
    "Bindings",
    "ContractMismatch",
    "EnvelopeInvalid",
    "Frames",
    "Manifest",
    "ProtocolMismatch",
    "Roles",
    "Violation",
    "WireError",
]


def __getattr__(name: str) -> Any:
    if name in ("Frames", "Manifest"):
        from . import wire

        return getattr(wire, name)
    if name in ("Bindings", "Roles"):
        from . import bindings

        return getattr(bindings, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
