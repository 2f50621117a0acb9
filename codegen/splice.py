"""Replace a marked block in a markdown file, touching nothing else; write or ``--check``
a file ``make gen`` keeps fresh (:func:`refresh`)."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


class SpliceError(Exception):
    pass


def splice(text: str, name: str, block: str, file: str = "<markdown>") -> str:
    """``text`` with the body between the ``name`` markers replaced by ``block``.

    Idempotent: splicing the same block twice gives the same text.
    """
    begin = f"<!-- tpwire:begin {name} -->"
    end = f"<!-- tpwire:end {name} -->"
    starts = [m.start() for m in re.finditer(re.escape(begin), text)]
    ends = [m.start() for m in re.finditer(re.escape(end), text)]
    if len(starts) != 1 or len(ends) != 1:
        # point at the first marker too many (or at the top when one is missing)
        extra = starts[1:2] or ends[1:2]
        line = text.count("\n", 0, extra[0]) + 1 if extra else 1
        found = f"found {len(starts)} begin and {len(ends)} end markers"
        raise SpliceError(
            f"{file}:{line}:1: error[splice]: need exactly one '{begin}' and one '{end}'; {found}"
        )
    if ends[0] < starts[0]:
        line = text.count("\n", 0, ends[0]) + 1
        raise SpliceError(f"{file}:{line}:1: error[splice]: '{end}' comes before '{begin}'")
    head = text[: starts[0] + len(begin)]
    tail = text[ends[0] :]
    nl = "\r\n" if "\r\n" in text else "\n"
    body = nl + block if block.endswith("\n") else nl + block + nl
    return head + body + tail


def refresh(path: Path, render: Callable[[str], str], argv: Sequence[str], stale: str) -> int:
    """Rewrite the file ``make gen`` keeps fresh: ``render(old text)`` is what ``path``
    should hold ("" for a missing file). With ``--check`` in ``argv`` nothing is written:
    a stale file prints ``stale`` to stderr and returns 1. Otherwise a changed file is
    written and named on stdout; 0 either way."""
    old = path.read_text("utf-8") if path.exists() else ""
    new = render(old)
    if new == old:
        return 0
    if "--check" in argv:
        print(stale, file=sys.stderr)
        return 1
    path.write_text(new, "utf-8")
    print(f"wrote {path}")
    return 0
