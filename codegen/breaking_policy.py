"""The "policy" group: ``BREAKING_WITHOUT_VERSION_BUMP``, a message broken without a
version bump (docs/evolution.md, "The policy: bump the version"). It reads the verdict, the
findings left after ``--allow``, not the specs' elements."""

from __future__ import annotations

from .breaking_pairs import Verdict, rule
from .breaking_registry import RULES
from .model import CMessage

#: Findings that do not call for a version bump (the bump itself, whole messages).
NO_BUMP_NEEDED = frozenset({"MESSAGE_VERSION_CHANGED", "MESSAGE_ADDED", "MESSAGE_REMOVED"})


def _text(m: CMessage, broken: set[str]) -> str:
    also = f" (and {m.version_field} with it)" if m.version_field else ""
    names = ", ".join(sorted(broken))
    allow = " ".join(f"--allow {r}" for r in sorted(broken))
    # What passes, exactly: a bump alone leaves the findings and adds the bump's own
    # (MESSAGE_VERSION_CHANGED, both), so the bump needs it allowed too; the rules allowed
    # without a bump lift this finding with them (it counts only findings not allowed).
    return (
        f"{m.name} breaks ({names}) but its version stays {m.version}; a deliberate "
        f"break passes with {m.name}.version bumped{also} and {allow} --allow "
        f"MESSAGE_VERSION_CHANGED (the bump is a finding too), or with {allow} and "
        "the version kept"
    )


@rule(
    "BREAKING_WITHOUT_VERSION_BUMP", "policy", "policy", "a message broken without a version bump"
)
def breaking_without_version_bump(v: Verdict) -> None:
    rules: dict[str, set[str]] = {}
    for f in v.findings:
        if f.rule not in NO_BUMP_NEEDED and RULES[f.rule].direction != "policy":
            for name in f.affects:
                rules.setdefault(name, set()).add(f.rule)
    old = v.ctx.old.spec.messages
    olds = {m.name: m for m in old}
    by_id = {m.id: m for m in old}
    for m in v.ctx.new.spec.messages:
        broken = rules.get(m.name)
        om = olds.get(m.name) or by_id.get(m.id)
        if broken and om is not None and m.version <= om.version:
            v.ctx.emit(
                "BREAKING_WITHOUT_VERSION_BUMP",
                _text(m, broken),
                (*m.path, "version"),
                subject=m.name,
                affects=(m.name,),
            )
