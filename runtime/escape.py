"""Peer-supplied text made safe for a log line, a terminal or a table.

A reason in an ERROR frame, a name or an END reason read from a journal comes from another
process, and a file can hold anything: a newline in it would forge a whole log line or table
row, an ANSI escape would drive the terminal, a bidi override would reorder what is shown.
``printable`` turns every character that is not plainly visible into a visible escape, so the
text stays on one line and reads back unambiguously (docs/runtime.md, docs/journal.md).
"""

from __future__ import annotations

__all__ = ["printable"]

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}
#: what ``printable`` appends to a result it shortened
ELLIPSIS = "..."


def _escape_char(c: str) -> str:
    named = _NAMED.get(c)
    if named is not None:
        return named
    if c.isprintable():
        return c
    o = ord(c)
    if o <= 0xFF:
        return f"\\x{o:02x}"
    if o <= 0xFFFF:
        return f"\\u{o:04x}"
    return f"\\U{o:08x}"


def printable(s: object, limit: int | None = None) -> str:
    """``s`` (``str(s)`` when it is not a string) on one visible line.

    Kept as they are: printable characters (letters, digits, punctuation and symbols of any
    script) and the ASCII space. Escaped: ``\\n``, ``\\r``, ``\\t`` and the backslash itself
    (``\\\\``, so an escape in the output always came from the escaping); every other
    character that is not printable as ``\\xNN`` (C0 controls, ESC, DEL, the C1 controls,
    no-break space), ``\\uNNNN`` (bidi overrides and isolates, zero-width characters, the
    line and paragraph separators U+2028/U+2029, lone surrogates, unassigned code points) or
    ``\\UNNNNNNNN``. ``limit``: at most this many characters, shortened at an escape's
    boundary and ending in ``...`` when it was cut.
    """
    text = s if isinstance(s, str) else str(s)
    if text.isprintable() and "\\" not in text:
        out = text
    else:
        out = "".join(map(_escape_char, text))
    if limit is None or len(out) <= limit:
        return out
    if limit < 0:
        raise ValueError(f"printable: limit must be at least 0, not {limit}")
    keep = max(0, limit - len(ELLIPSIS))
    # cut at a character of the input, never inside an escape
    pieces: list[str] = []
    used = 0
    for c in text:
        piece = _escape_char(c)
        if used + len(piece) > keep:
            break
        pieces.append(piece)
        used += len(piece)
    return ("".join(pieces) + ELLIPSIS)[:limit]
