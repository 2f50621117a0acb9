"""The conformance corpus's stream cases (tests/conformance/streams/, docs/conformance.md):
rules across envelopes, each case a sequence of plain envelopes played through a sender
and a receiver.

A step's verdict at an end is the envelope's own violations (``from_plain``, which runs
``validate``) plus the violations across envelopes that end's ``EpochCache`` finds. A step
``valid: true`` must pass both ends; ``valid: false`` must be refused with exactly
``codes`` by the ends ``end`` names (``both``, or ``receiver`` with the sender accepting).
An end commits a step only when it accepted it (a refused envelope changes nothing), and
``restart_before: i`` empties the receiver's cache before step ``i``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tpwire.codegen.compiler import compile as compile_spec
from tpwire.runtime.epochs import CACHE_CODES, EpochCache
from tpwire.runtime.errors import VIOLATION_CODES
from tpwire.runtime.plain import from_plain

STREAMS = Path(__file__).parent / "conformance" / "streams"
MIN_CASES = 10


@dataclass(frozen=True)
class Case:
    file: str
    description: str
    spec: str
    stream: tuple[Any, ...]
    restart_before: int | None

    @property
    def id(self) -> str:
        return f"{self.file}::{self.description}"


def _cases() -> list[Case]:
    out = []
    for path in sorted(STREAMS.glob("*.yaml")):
        data = yaml.safe_load(path.read_text("utf-8"))
        for c in data["cases"]:
            out.append(
                Case(
                    path.stem,
                    c["description"],
                    data["spec"],
                    tuple(c["stream"]),
                    c.get("restart_before"),
                )
            )
    return out


CASES = _cases()


@functools.cache
def _protocol(spec: str) -> Any:
    return compile_spec(spec)


def test_the_corpus_has_stream_cases_of_every_rule_across_envelopes() -> None:
    assert len(CASES) >= MIN_CASES
    codes = {code for c in CASES for step in c.stream for code in step.get("codes", ())}
    assert set(CACHE_CODES) <= codes
    assert codes <= set(CACHE_CODES) | set(VIOLATION_CODES)
    ends = {step.get("end") for c in CASES for step in c.stream if not step["valid"]}
    assert ends == {"both", "receiver"}
    for c in CASES:
        for step in c.stream:
            assert step["valid"] == ("codes" not in step), c.id


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_stream_case(case: Case) -> None:
    proto = _protocol(case.spec)
    b = proto.BINDINGS
    tx: EpochCache[Any, Any] = EpochCache(b, keep_values=False)
    rx: EpochCache[Any, Any] = EpochCache(b, keep_values=True)
    for i, step in enumerate(case.stream):
        if i == case.restart_before:
            rx.forget()
        header, msg, own = from_plain(proto, step["envelope"])
        at_sender = [*own, *(tx.check(msg, header) if not own else [])]
        at_receiver = [*own, *(rx.check(msg, header) if not own else [])]
        want = set(step.get("codes", ()))
        end = step.get("end", "both")
        where = f"step {i}"
        assert {v.code for v in at_receiver} == want, (where, at_receiver)
        assert {v.code for v in at_sender} == (want if end == "both" else set()), (where, at_sender)
        if not at_sender:
            tx.commit(msg, header)
        if not at_receiver:
            rx.commit(msg, header)
