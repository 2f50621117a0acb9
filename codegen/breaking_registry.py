"""The breaking-rule registry: every rule id with its direction, group and one-line purpose,
and the one function that finds it (docs/evolution.md, "Rule catalogue").

A rule is a function over one kind of pair (a subclass of :class:`Pair`, named by the
annotation of its parameter: ``FieldPair``, ``MessageAdded``, ... in
``codegen/breaking_pairs.py``), registered with :func:`rule`. ``codegen/breaking_pairs.py``
walks two specs, builds the pairs and runs every rule registered over each pair's kind; a
rule may emit only its own id. :data:`RULES` is the catalogue ``tpwire breaking
--list-rules`` prints, in group order (:data:`GROUPS`), then registration order, and every
:class:`Finding` is checked against it when it is made. Adding a rule: docs/architecture.md,
"How to add a breaking rule".
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Self, TypeVar, cast

DIRECTIONS = ("tightening", "loosening", "both", "wire", "policy")

#: What each direction means for a mixed deployment (the tail of every finding's text).
CONSEQUENCE = {
    "tightening": "an old sender may send what a new receiver refuses",
    "loosening": "a new sender may send what an old receiver refuses",
    "both": "old and new peers may refuse each other's envelopes",
    "wire": "the same bytes mean something else to old and new peers",
    "policy": "receivers cannot tell the two contracts apart by version",
}

#: The catalogue's sections (docs/evolution.md), in the order ``--list-rules`` shows them.
GROUPS = ("identity", "enums", "fields", "presence", "tensors", "derived", "invariants", "policy")


class UnknownRuleError(ValueError):
    """A finding, or an emit, names a rule id that is not registered (or not the running
    rule's own id)."""


@dataclass(frozen=True)
class Rule:
    id: str
    direction: str
    group: str
    summary: str


T = TypeVar("T")


class Pair:
    """What a rule compares: an old element and its new counterpart (or one side alone, for
    an addition or a deletion). :meth:`once` memoizes a comparison several rules read
    (presence rules compared by meaning feed four rule ids), so it runs once per pair."""

    def once(self, compute: Callable[[Self], T]) -> T:
        memo: dict[object, object] = self.__dict__.setdefault("_once", {})
        if compute not in memo:
            memo[compute] = compute(self)
        return cast(T, memo[compute])


P = TypeVar("P", bound=Pair)
Check = Callable[[P], None]


@dataclass(frozen=True)
class _Entry:
    rule: Rule
    kind: type[Pair]
    check: Callable[[typing.Any], None]
    seq: int


#: The catalogue, in group order then registration order; the same dict object always (the
#: CLI and ``codegen/breaking.py`` hold it), updated in place as rules come and go.
RULES: dict[str, Rule] = {}
_ENTRIES: dict[str, _Entry] = {}
_BY_KIND: dict[type[Pair], tuple[tuple[str, Callable[[typing.Any], None]], ...]] = {}
_SEQ = [0]
_ID = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*")


def _pair_kind(check: Callable[..., None]) -> type[Pair]:
    """The pair kind a rule reads: the annotation of its (only) parameter."""
    params = list(inspect.signature(check).parameters)
    kind = typing.get_type_hints(check).get(params[0]) if len(params) == 1 else None
    if not (isinstance(kind, type) and issubclass(kind, Pair)):
        raise TypeError(
            f"rule function {check.__qualname__} must take one parameter annotated with a "
            "pair kind (a Pair subclass, codegen/breaking_pairs.py)"
        )
    return kind


def _reorder() -> None:
    entries = sorted(_ENTRIES.values(), key=lambda e: (GROUPS.index(e.rule.group), e.seq))
    RULES.clear()
    RULES.update((e.rule.id, e.rule) for e in entries)
    _BY_KIND.clear()


def rule(id: str, direction: str, group: str, summary: str) -> Callable[[Check[P]], Check[P]]:
    """Register the decorated function as the finder of rule ``id``: it is called with each
    pair of the kind its parameter is annotated with, and emits ``id`` only."""

    def register(check: Check[P]) -> Check[P]:
        for bad, why in (
            (not _ID.fullmatch(id), f"rule id {id!r} is not UPPER_SNAKE_CASE"),
            (id in _ENTRIES, f"rule {id} is already registered"),
            (direction not in DIRECTIONS, f"direction {direction!r} is not one of {DIRECTIONS}"),
            (group not in GROUPS, f"group {group!r} is not one of {GROUPS}"),
            (not summary.strip(), f"rule {id} needs a one-line summary"),
        ):
            if bad:
                raise ValueError(why)
        _SEQ[0] += 1
        _ENTRIES[id] = _Entry(
            Rule(id, direction, group, summary), _pair_kind(check), check, _SEQ[0]
        )
        _reorder()
        return check

    return register


def _built_in(check: Callable[..., object]) -> bool:
    """A rule the compiler ships: its function is defined in a module of this package
    (``tpwire.codegen``: the ``breaking_<group>.py`` modules)."""
    return str(getattr(check, "__module__", "")).startswith(f"{__package__}.")


def unregister(id: str) -> None:
    """Remove rule ``id`` a caller registered (tests that register a rule remove it again);
    a no-op if absent. A built-in rule raises ``ValueError``: registered again it would
    come last in its group, changing the catalogue, the docs' tables and the order rules
    run in."""
    entry = _ENTRIES.get(id)
    if entry is None:
        return
    if _built_in(entry.check):
        raise ValueError(f"rule {id} is built in; only a rule a caller registered is removed")
    del _ENTRIES[id]
    _reorder()


def rules_over(kind: type[Pair]) -> tuple[tuple[str, Callable[[typing.Any], None]], ...]:
    """``(id, function)`` of every rule over pairs of ``kind``, in catalogue order."""
    found = _BY_KIND.get(kind)
    if found is None:
        found = tuple((i, _ENTRIES[i].check) for i in RULES if _ENTRIES[i].kind is kind)
        _BY_KIND[kind] = found
    return found


def pair_kind(id: str) -> type[Pair]:
    """The pair kind rule ``id`` reads."""
    return _ENTRIES[id].kind


@dataclass(frozen=True, order=True)
class Finding:
    file: str
    line: int
    col: int
    rule: str
    text: str
    subject: str = field(default="", compare=False)
    #: the new spec's messages whose version this finding calls for bumping
    affects: tuple[str, ...] = field(default=(), compare=False)
    #: the catalogue entry of ``rule`` when the finding was made, so a finding stays
    #: printable after its rule is unregistered
    entry: Rule = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        entry = RULES.get(self.rule)
        if entry is None:
            raise UnknownRuleError(f"finding with unregistered rule id {self.rule!r}")
        object.__setattr__(self, "entry", entry)

    @property
    def direction(self) -> str:
        return self.entry.direction

    def __str__(self) -> str:
        return (
            f"{self.file}:{self.line}:{self.col}: error[{self.rule}] ({self.direction}): "
            f"{self.text}: {CONSEQUENCE[self.direction]}"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "rule": self.rule,
            "direction": self.direction,
            "subject": self.subject,
            "message": self.text,
            "consequence": CONSEQUENCE[self.direction],
        }


def catalogue_table(group: str) -> str:
    """The markdown table of ``group``'s rules as docs/evolution.md's catalogue shows it
    (``tests/test_breaking_registry.py`` holds the page to it)."""
    rows = ["| rule | direction | what changed |", "|---|---|---|"]
    rows += [
        f"| `{r.id}` | {r.direction} | {r.summary} |" for r in RULES.values() if r.group == group
    ]
    return "\n".join(rows) + "\n"
