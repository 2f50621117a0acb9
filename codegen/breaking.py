"""``tpwire breaking``: what a spec change breaks, for whom, located in the spec.

Two checked specs (old, new) are compared element by element: identity (protocol, message
ids, names, versions, actions, discriminators, header slots, roles, control actions), enums,
fields, presence rules, ranges, tensors, derived formulas and invariants. Presence rules,
invariants and derived formulas are compared by meaning, not by text: ``codegen/domains.py``
enumerates the finite domains the expressions read, so an equivalent rewrite is no finding
and a real change comes with a witness (an assignment where old and new disagree).

Every finding has a stable rule id and a direction (``RULES``):

* ``tightening``: a new receiver refuses what an old sender may send;
* ``loosening``: an old receiver refuses what a new sender may send;
* ``both``: either way; ``wire``: the same bytes mean something else to old and new peers;
* ``policy``: ``BREAKING_WITHOUT_VERSION_BUMP``, a message broken without a version bump.

Findings are located in the new spec (the old one for what the new spec deleted) and sorted.
See docs/evolution.md for the catalogue with one example each and the rollout guide.

This module is the entry point (loading, the verdict, ``--allow``); the parts:

* ``codegen/breaking_registry.py``: the rule catalogue (``RULES``), ``rule`` to register
  a rule, ``Finding``;
* ``codegen/breaking_pairs.py``: what is paired with what, and the walk that runs every
  registered rule on each pair;
* ``codegen/breaking_conditions.py``: presence rules, derived formulas and invariants
  compared by meaning;
* the rules, one module per catalogue group: ``breaking_identity.py``,
  ``breaking_enums.py``, ``breaking_fields.py``, ``breaking_presence.py``,
  ``breaking_tensors.py``, ``breaking_derived.py``, ``breaking_invariants.py``,
  ``breaking_policy.py``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# the rule modules register their rules when imported (the catalogue's groups, in order)
from . import (
    breaking_derived,
    breaking_enums,
    breaking_fields,
    breaking_identity,
    breaking_invariants,
    breaking_policy,
    breaking_presence,
    breaking_tensors,
)
from .breaking_pairs import Side, compare_sides, judge
from .breaking_registry import CONSEQUENCE, DIRECTIONS, RULES, Finding, Rule
from .check import check
from .errors import SpecError, SpecErrors
from .ir import build
from .load import load_text

__all__ = [
    "CONSEQUENCE",
    "DIRECTIONS",
    "RULES",
    "Finding",
    "Report",
    "Rule",
    "Side",
    "breaking",
    "compare",
    "compare_texts",
    "load_side",
    "policy",
    "to_accept",
    "unknown_rule",
]

#: The modules whose import registers the built-in rules.
RULE_MODULES = (
    breaking_identity,
    breaking_enums,
    breaking_fields,
    breaking_presence,
    breaking_tensors,
    breaking_derived,
    breaking_invariants,
    breaking_policy,
)


def load_side(source: str | bytes, name: str, *, old: bool = False) -> Side:
    """Load, check and fingerprint a spec (``SpecErrors`` when it does not compile). The
    ``old`` side is what peers ran: the rules on what can carry a stream, added after specs
    that break them were committed, are not applied to it (``check``'s ``stream_rules``)."""
    loaded = load_text(source, name)
    spec = check(loaded, stream_rules=not old)
    return Side(loaded, spec, build(spec, name).fingerprint)


def compare(old: Side, new: Side) -> list[Finding]:
    """Every finding of ``new`` against ``old``, sorted (policy findings not included)."""
    return compare_sides(old, new)


def policy(findings: Sequence[Finding], old: Side, new: Side) -> list[Finding]:
    """``BREAKING_WITHOUT_VERSION_BUMP`` for each message broken without a bump (the rules
    over the verdict, ``codegen/breaking_policy.py``)."""
    return judge(findings, old, new)


def unknown_rule(rule: str) -> str | None:
    """None for a known rule id, else a one-line error naming the nearest known id(s): a
    close spelling (difflib), else the ids sharing a word with it (``VERSION``), else the
    nearest id at all, and where the catalogue is listed."""
    if rule in RULES:
        return None
    key = rule.strip().upper().replace("-", "_").replace(" ", "_")

    def ratio(r: str) -> float:
        return difflib.SequenceMatcher(None, key, r).ratio()

    close = [key] if key in RULES else difflib.get_close_matches(key, list(RULES), 3, 0.6)
    close = [r for r in close if ratio(r) >= ratio(close[0]) - 0.1]  # the near ones only
    if not close:
        words = set(key.split("_")) - {""}
        sharing = [r for r in RULES if words & set(r.split("_"))]
        close = difflib.get_close_matches(key, sharing, n=3, cutoff=0.0)
    if close:
        names = close[0] if len(close) == 1 else f"{', '.join(close[:-1])} or {close[-1]}"
        hint = f"did you mean {names}?"
    else:
        nearest = difflib.get_close_matches(key, list(RULES), n=1, cutoff=0.0)
        hint = f"the nearest known rule id is {nearest[0]}" if nearest else "no rule is near"
    return f"unknown rule {rule!r}; {hint} (tpwire breaking --list-rules lists all {len(RULES)})"


@dataclass(frozen=True)
class Report:
    old: Side
    new: Side
    findings: tuple[Finding, ...]  # after --allow / ignore
    allowed: tuple[Finding, ...]


def breaking(old: Side, new: Side, allow: Iterable[str] = ()) -> Report:
    """The full verdict: comparison, allow list, then the version-bump policy."""
    allowed_rules = frozenset(allow)
    found = compare(old, new)
    kept = [f for f in found if f.rule not in allowed_rules]
    pol = policy(kept, old, new)
    everything = sorted([*found, *pol])
    return Report(
        old,
        new,
        tuple(f for f in everything if f.rule not in allowed_rules),
        tuple(f for f in everything if f.rule in allowed_rules),
    )


def to_accept(reports: Iterable[Report]) -> list[str]:
    """The rules that, allowed as well, leave ``reports`` with no finding: every rule found
    but the policy's (allowing what a message breaks with lifts the policy finding too)."""
    return sorted(
        {f.rule for r in reports for f in r.findings if f.rule != "BREAKING_WITHOUT_VERSION_BUMP"}
    )


def compare_texts(
    old_text: str | bytes,
    new_text: str | bytes,
    old_name: str = "<old>",
    new_name: str = "<new>",
    allow: Iterable[str] = (),
) -> Report:
    """Compile both specs (``SpecErrors`` with every error of both) and compare them."""
    errors: list[SpecError] = []
    sides: list[Side] = []
    for text, name, old in ((old_text, old_name, True), (new_text, new_name, False)):
        try:
            sides.append(load_side(text, name, old=old))
        except SpecErrors as exc:
            errors.extend(exc.errors)
    if errors:
        raise SpecErrors(errors)
    return breaking(sides[0], sides[1], allow)
