"""Render the catalogue of error codes (``codegen/codes.py``) into docs/spec-language.md.

The page's "Error codes" section holds a block between ``<!-- tpwire:begin codes -->`` and
``<!-- tpwire:end codes -->``; ``python -m tools.codes_doc`` (part of ``make gen``) rewrites
it, ``--check`` exits 1 where it is stale (tests/test_check_codes.py runs the same check).
"""

from __future__ import annotations

import sys
from pathlib import Path

from tpwire.codegen.codes import CODES
from tpwire.codegen.splice import refresh, splice

PAGE = Path(__file__).resolve().parents[1] / "docs" / "spec-language.md"
BLOCK = "codes"
_STAGES = {
    "load": "reading the file",
    "schema": "the meta-schema",
    "expr": "an expression",
    "check": "the spec's meaning",
    "gen": "several specs at once",
}


def render_block() -> str:
    """The markdown table of every catalogued code, in catalogue order."""
    rows = [
        "| code | found while | meaning |",
        "| --- | --- | --- |",
        *(f"| `{c.name}` | {_STAGES[c.stage]} | {c.meaning} |" for c in CODES),
    ]
    return "\n".join(rows) + "\n"


def spliced(text: str) -> str:
    """``text`` (the page) with its codes block rendered afresh."""
    return splice(text, BLOCK, render_block(), str(PAGE))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    stale = f"{PAGE}: the error-code list is stale: run make gen"
    return refresh(PAGE, spliced, args, stale)


if __name__ == "__main__":
    sys.exit(main())
