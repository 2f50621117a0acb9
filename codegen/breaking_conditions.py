"""Presence rules, derived formulas and invariants of two specs compared by meaning.

``codegen/domains.py`` enumerates the finite domains the expressions read, so an
equivalent rewrite is no difference and a real one comes with a witness (docs/evolution.md,
"How it decides"). Each function here raises nothing: where enumeration cannot decide it
returns the :class:`~.domains.Undecided` it caught, and the rules
(``codegen/breaking_presence.py``, ``breaking_derived.py``, ``breaking_invariants.py``)
fall back to comparing normal forms and say so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from . import domains, expr
from .constraints import Presence
from .domains import Diff, Scope, Space, Undecided
from .model import CExpr, CInvariant, CMessage


@dataclass(frozen=True)
class PresenceDiff:
    """Where a field is required, and where it must be absent, old against new."""

    required: Diff
    forbidden: Diff


def _node(ce: CExpr | None) -> expr.Node | None:
    return None if ce is None else ce.node


def _required(p: Presence, enums: Mapping[str, Mapping[str, int]]) -> domains.Pred:
    node = _node(p.required_when)
    return lambda v: p.always or domains.condition(node, v, enums)


def _forbidden(p: Presence, enums: Mapping[str, Mapping[str, int]]) -> domains.Pred:
    fw, nu = _node(p.forbidden_when), _node(p.none_unless)
    return lambda v: (
        domains.condition(fw, v, enums) or (nu is not None and not domains.condition(nu, v, enums))
    )


def presence_diff(
    old: Presence, new: Presence, old_scope: Scope, new_scope: Scope, rename: Mapping[str, str]
) -> PresenceDiff | Undecided:
    """More required or forbidden is what old senders send; less, what new ones send."""
    try:
        space = Space(
            old_scope,
            new_scope,
            [c.node for _, c in old.conditions],
            [c.node for _, c in new.conditions],
            rename,
        )
        oe, ne = old_scope.enums, new_scope.enums
        return PresenceDiff(
            domains.compare(space, _required(old, oe), _required(new, ne), "old", "new"),
            domains.compare(space, _forbidden(old, oe), _forbidden(new, ne), "old", "new"),
        )
    except Undecided as exc:
        return exc


def same_presence_form(old: Presence, new: Presence) -> bool:
    """The presence rules have the same normal form (the fallback where enumeration cannot
    decide)."""
    return old.always == new.always and all(
        domains.same_form(_node(getattr(old, k)), _node(getattr(new, k)))
        for k in ("required_when", "forbidden_when", "none_unless")
    )


def ever_required(p: Presence, old_scope: Scope, new_scope: Scope, *, added: bool) -> bool:
    """Whether the other side's senders can produce an envelope that needs the field: old
    senders for a field the new spec adds, new senders for one it deletes."""
    if p.always:
        return True
    if p.required_when is None:
        return False
    node = p.required_when.node
    try:
        space = Space(old_scope, new_scope, [] if added else [node], [node] if added else [])
    except Undecided:
        return True
    enums = (new_scope if added else old_scope).enums
    side = "old" if added else "new"
    return any(
        space.sendable(o, n, side) and domains.condition(node, n if added else o, enums)
        for o, n in space.assignments()
    )


def derived_difference(
    old: CExpr, new: CExpr, old_scope: Scope, new_scope: Scope, rename: Mapping[str, str]
) -> str | Undecided | None:
    """An assignment where the two formulas compute different values (None: they agree)."""
    oe, ne = old_scope.enums, new_scope.enums
    try:
        space = Space(old_scope, new_scope, [old.node], [new.node], rename)
        return domains.first_difference(
            space,
            lambda v: domains.evaluate(old.node, v, oe),
            lambda v: domains.evaluate(new.node, v, ne),
        )
    except Undecided as exc:
        return exc


def invariant_diff(
    old: CInvariant | None,
    new: CInvariant | None,
    old_scope: Scope,
    new_scope: Scope,
    rename: Mapping[str, str],
) -> Diff | Undecided:
    """What the new invariant admits that the old one refuses (``gained``: new senders send
    it) and the reverse (``lost``: old senders send it); a missing side admits everything."""
    on = old.expr.node if old else None
    nn = new.expr.node if new else None
    oe, ne = old_scope.enums, new_scope.enums
    try:
        space = Space(old_scope, new_scope, [on] if on else [], [nn] if nn else [], rename)
        return domains.compare(
            space,
            lambda v: domains.invariant(on, v, oe),
            lambda v: domains.invariant(nn, v, ne),
            "new",  # admits more: what new senders send
            "old",  # admits less: what old senders send
        )
    except Undecided as exc:
        return exc


# --- which invariants agree ------------------------------------------------------------


def settled_invariants(
    om: CMessage, nm: CMessage, old_scope: Scope, new_scope: Scope, rename: Mapping[str, str]
) -> set[int]:
    """The invariants (by ``id()``) of both messages that need no finding: those kept as
    they were, and whole groups (invariants sharing names; groups over disjoint names are
    independent) whose conjunctions admit the same envelopes, so splitting, merging,
    reordering or renaming invariants is no finding."""
    settled: set[int] = set()
    if not rename:  # an invariant kept as it was agrees with itself
        n_texts = {i.expr.text for i in nm.invariants}
        o_texts = {i.expr.text for i in om.invariants}
        settled.update(id(i) for i in om.invariants if i.expr.text in n_texts)
        settled.update(id(i) for i in nm.invariants if i.expr.text in o_texts)
    o_rest = [i for i in om.invariants if id(i) not in settled]
    n_rest = [i for i in nm.invariants if id(i) not in settled]
    for o_group, n_group in _groups(o_rest, n_rest, rename):
        if _same_group(o_group, n_group, old_scope, new_scope, rename):
            settled.update(id(i) for i in (*o_group, *n_group))
    return settled


def _same_group(
    olds: Sequence[CInvariant],
    news: Sequence[CInvariant],
    old_scope: Scope,
    new_scope: Scope,
    rename: Mapping[str, str],
) -> bool:
    oe, ne = old_scope.enums, new_scope.enums
    try:
        space = Space(
            old_scope,
            new_scope,
            [i.expr.node for i in olds],
            [i.expr.node for i in news],
            rename,
        )
        return domains.compare(
            space,
            lambda v: all(domains.invariant(i.expr.node, v, oe) for i in olds),
            lambda v: all(domains.invariant(i.expr.node, v, ne) for i in news),
            "new",
            "old",
        ).same
    except Undecided:
        return not rename and {_norm_key(i) for i in olds} == {_norm_key(i) for i in news}


def _norm_key(i: CInvariant) -> str:
    return expr.to_text(domains.normalize(i.expr.node))


def _groups(
    olds: Sequence[CInvariant], news: Sequence[CInvariant], rename: Mapping[str, str]
) -> list[tuple[list[CInvariant], list[CInvariant]]]:
    """Old and new invariants grouped by the names they share (connected components)."""
    items = [(True, i, set(expr.names(i.expr.node))) for i in olds]
    items += [(False, i, {rename.get(n, n) for n in expr.names(i.expr.node)}) for i in news]
    parent = list(range(len(items)))

    def find(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    owner: dict[str, int] = {}
    for k, (_, _, names) in enumerate(items):
        for n in sorted(names):
            if n in owner:
                parent[find(k)] = find(owner[n])
            else:
                owner[n] = k
    groups: dict[int, tuple[list[CInvariant], list[CInvariant]]] = {}
    for k, (is_old, inv, _) in enumerate(items):
        g = groups.setdefault(find(k), ([], []))
        g[0 if is_old else 1].append(inv)
    return [groups[k] for k in sorted(groups)]
