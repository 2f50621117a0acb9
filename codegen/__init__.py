"""The tpwire compiler: load -> check -> IR -> render (codegen/compiler.py).

Needs the ``compiler`` extra (PyYAML, jinja2, jsonschema and the pinned formatter).
The stages, what each module owns and where to add things: docs/architecture.md.
"""

from tpwire.extras import require

require("compiler", "tpwire.codegen")

from .compiler import compile, generate, protocol_ir, protocol_ir_from_text  # noqa: E402
from .errors import SpecError, SpecErrors  # noqa: E402

__all__ = ["SpecError", "SpecErrors", "compile", "generate", "protocol_ir", "protocol_ir_from_text"]
