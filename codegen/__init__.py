"""The tpwire compiler: load -> check -> IR -> render (see DESIGN section 2)."""

from .compiler import compile, generate, protocol_ir, protocol_ir_from_text
from .errors import SpecError, SpecErrors

__all__ = ["SpecError", "SpecErrors", "compile", "generate", "protocol_ir", "protocol_ir_from_text"]
