"""Errors and violations shared by every generated protocol module.

Violations are data (protovalidate style): a stable ``code``, the field path, what the
rule expected and what it saw, the rule text and the failure-mode id it guards, plus the
header ids so one log line localises the chunk.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

#: The stable violation codes (docs/spec-language.md, "Violation codes").
VIOLATION_CODES = (
    "missing",
    "forbidden",
    "type",
    "dtype",
    "shape",
    "range",
    "must_be_none",
    "invariant",
    "version",
    "unknown_field",
)


def show_id(x: object) -> str:
    """An id for a log line: never raises (``str`` of an int past Python's int-to-str digit
    limit does), never floods a line."""
    if x is None or isinstance(x, bool):
        return repr(x)
    if isinstance(x, int):
        return str(int(x)) if -(2**63) <= x < 2**63 else f"<int of {x.bit_length()} bits>"
    return f"<{type(x).__name__}>"


#: The ids of one envelope by the spec's own field names, in role order (sequence, chunk,
#: epoch): ``(("seq", 4), ("generation", 1))``; a value is None where the header has none.
Ids = tuple[tuple[str, int | None], ...]


def ids_text(ids: Ids) -> str:
    """``seq=4 generation=1``: how a log line shows an envelope's ids."""
    return " ".join(f"{name}={show_id(value)}" for name, value in ids)


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule of one envelope."""

    code: str
    field: str
    expected: str
    actual: str
    rule: str
    fm: str | None = None
    message: str = ""
    #: the header's role ids by the spec's field names (sequence, chunk, epoch), for logs
    ids: Ids = ()

    def id(self, name: str) -> int | None:
        """The id the header's field ``name`` carried (None when absent or ill-typed)."""
        return dict(self.ids).get(name)

    def __str__(self) -> str:
        fm = f" [{self.fm}]" if self.fm else ""
        why = f": {self.message}" if self.message else ""
        where = f"{ids_text(self.ids)} " if self.ids else ""
        return (
            f"{where}{self.field}: {self.code}{fm}{why}; expected {self.expected}, "
            f"got {self.actual} (rule: {self.rule})"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "code": self.code,
            "field": self.field,
            "expected": self.expected,
            "actual": self.actual,
            "rule": self.rule,
            "fm": self.fm,
            "message": self.message,
            "ids": dict(self.ids),
        }


class EnvelopeInvalid(Exception):
    """An envelope broke one or more rules of its spec; carries every violation."""

    def __init__(self, violations: Iterable[Violation]) -> None:
        self.violations: tuple[Violation, ...] = tuple(violations)
        lines = "\n".join(f"  - {v}" for v in self.violations)
        n = len(self.violations)
        super().__init__(f"envelope invalid ({n} violation{'s' if n != 1 else ''}):\n{lines}")

    @property
    def codes(self) -> frozenset[str]:
        return frozenset(v.code for v in self.violations)


class ContractMismatch(ImportError):
    """A generated module was generated for another runtime contract (another tpwire): it
    must be generated again (``tpwire gen``) before this runtime can run it."""


class WireError(Exception):
    """Frames from a peer that do not decode under this protocol.

    Raised before anything is allocated from the peer's numbers. ``code`` is stable
    (``frame0``, ``magic``, ``wire-version``, ``checksum``, ``fingerprint``, ``action``,
    ``header``, ``message-id``, ``message-version``, ``presence``, ``scalar``, ``dtype``,
    ``rank``, ``dim``, ``size``, ``frame1``), ``word`` is the frame 0 index involved.
    """

    def __init__(self, code: str, message: str, word: int | None = None) -> None:
        self.code = code
        self.word = word
        at = f" (frame 0 word {word})" if word is not None else ""
        super().__init__(f"wire error [{code}]{at}: {message}")


class ProtocolMismatch(WireError):
    """The peer speaks another protocol, spec revision or wire version."""
