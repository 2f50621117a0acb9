"""Runtime support of the generated bindings: errors, violations and the wire format.

The ``torch.distributed`` channels (DESIGN section 6) build on these.
"""

from .errors import EnvelopeInvalid, ProtocolMismatch, Violation, WireError
from .wire import Frames, Manifest

__all__ = ["EnvelopeInvalid", "Frames", "Manifest", "ProtocolMismatch", "Violation", "WireError"]
