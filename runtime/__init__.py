"""Runtime support of the generated bindings: errors, violations and the wire format.

The ``torch.distributed`` channels (DESIGN section 6) build on these. ``Frames`` and
``Manifest`` are imported on first use, so the compiler (which only needs the dtype table
and the errors) starts without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import EnvelopeInvalid, ProtocolMismatch, Violation, WireError

if TYPE_CHECKING:
    from .wire import Frames, Manifest

__all__ = ["EnvelopeInvalid", "Frames", "Manifest", "ProtocolMismatch", "Violation", "WireError"]


def __getattr__(name: str) -> Any:
    if name in ("Frames", "Manifest"):
        from . import wire

        return getattr(wire, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
