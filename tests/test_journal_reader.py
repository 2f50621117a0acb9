"""The journal reader under hostile files (docs/journal.md, "Reading bad input"), and the
escaping of peer-supplied text before it reaches a terminal, a log or a table
(``tpwire.runtime.escape``)."""

from __future__ import annotations

import pytest

from tpwire.runtime.escape import printable

pytestmark = pytest.mark.timeout(120)


# --- escape.printable --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain text, 1-2 ünïcode ✓ 漢字", "plain text, 1-2 ünïcode ✓ 漢字"),
        ("two\nlines", "two\\nlines"),
        ("cr\rlf\r\n", "cr\\rlf\\r\\n"),
        ("tab\there", "tab\\there"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("nul\x00del\x7f", "nul\\x00del\\x7f"),
        ("c1 \x85 \x9b31m", "c1 \\x85 \\x9b31m"),
        ("bidi \u202eevil\u202c \u2066x\u2069", "bidi \\u202eevil\\u202c \\u2066x\\u2069"),
        ("ls\u2028ps\u2029", "ls\\u2028ps\\u2029"),
        ("zw\u200bj\ufeff", "zw\\u200bj\\ufeff"),
        ("a\\nb", "a\\\\nb"),  # a literal backslash-n is not shown as an escaped newline
        ("surrogate \udcff", "surrogate \\udcff"),
        ("tag \U000e0041", "tag \\U000e0041"),
        ("nbsp\xa0", "nbsp\\xa0"),
    ],
)
def test_printable_escapes_every_invisible_character(raw: str, shown: str) -> None:
    out = printable(raw)
    assert out == shown
    assert out.isprintable()
    assert len(out.splitlines()) <= 1


def test_printable_takes_any_object_and_keeps_one_line() -> None:
    assert printable(None) == "None"
    assert printable(3) == "3"
    assert printable(b"a\nb") == "b'a\\\\nb'"  # str(bytes) already escapes; the \ is kept visible
    every = "".join(map(chr, range(0x2100))) + "\U0010ffff"
    out = printable(every)
    assert out.isprintable()
    assert "\n" not in out and "\x1b" not in out and "\u2028" not in out


def test_printable_limit_cuts_between_escapes() -> None:
    assert printable("abcdef", 10) == "abcdef"
    assert printable("abcdefghijkl", 8) == "abcde..."
    # "\x1b" is four characters: cut before it, never inside it
    assert printable("ab\x1bcdef", 8) == "ab..."
    assert printable("abc", 0) == ""
    assert printable("a" * 100, 2) == ".."
    for limit in range(0, 20):
        out = printable("x\n\x1b[2J\u202e" * 5, limit)
        assert len(out) <= limit
        assert "\x1b" not in out and "\n" not in out
    with pytest.raises(ValueError, match="limit"):
        printable("abc", -1)
