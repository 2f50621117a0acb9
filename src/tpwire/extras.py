"""Which optional extra provides what, and the one-line message when it is missing.

The base install is the runtime (torch and xxhash). The compiler's dependencies and
hypothesis are extras, so a GPU worker that imports checked-in bindings installs neither,
and a CI job that only runs ``tpwire check`` installs no hypothesis.
"""

from __future__ import annotations

import importlib

#: extra -> the modules it brings (import names)
EXTRAS: dict[str, tuple[str, ...]] = {
    "compiler": ("yaml", "jinja2", "jsonschema", "ruff"),
    "testing": ("hypothesis",),
    "metrics": ("prometheus_client",),
}


class MissingExtra(ModuleNotFoundError):
    """An optional dependency is not installed; the message names the extra to install."""


class FormatterError(RuntimeError):
    """The compiler's pinned formatter is missing, or another version of it is installed."""


def missing_extra_message(extra: str, module: str, what: str) -> str:
    return f"{what} needs {module!r} from the {extra!r} extra: pip install 'tpwire[{extra}]'"


def require(extra: str, what: str) -> None:
    """Raise :class:`MissingExtra` (one line) unless every module of ``extra`` imports."""
    for module in EXTRAS[extra]:
        try:
            importlib.import_module(module)
        except ImportError:
            raise MissingExtra(missing_extra_message(extra, module, what), name=module) from None
