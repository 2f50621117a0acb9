"""What generated validators report with: rules, one pass's report, tensor fields.

A generated module declares one ``Rule`` constant per check (what a violation of it says)
and one ``TensorField`` per tensor field (dtypes, shape pattern, bound, manifest word);
its unrolled per-field code runs the checks and, on a failure, makes one short call on a
``Report``: ``r.refuse(_R_Infer_height_range, x)``. What is fixed per rule lives in the
constant, and what every protocol does with a failure (the ``Violation``, the fields
later rules must not read, fail-fast) lives here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch

from .errors import Ids, Violation
from .wire import (
    DTYPE_BY_TORCH,
    DimPattern,
    Entry,
    TensorSlot,
    bool_bytes_problem,
    dtype_name,
    is_dense,
    materialize,
    plan_segments,
    put_tensor,
    read_tensor,
    shape_problem,
    show,
    sides,
)

_TENSOR = torch.Tensor
_PARAMETER = torch.nn.Parameter
_STRIDED = torch.strided
_BOOL = torch.bool
#: tensor signatures a message's ``TensorGroup`` keeps as checked
SEEN_LIMIT = 64


class Stop(Exception):
    """Ends a fail-fast validation at its first violation."""


class Rule(NamedTuple):
    """One rule a generated validator checks: what a violation of it says, but the value."""

    code: str
    field: str  # the path violations name: "height", "header.call_id", "a, b"
    expected: str
    rule: str = ""  # "" means "code: expected"
    fm: str | None = None
    message: str = ""

    @property
    def key(self) -> str:
        """The field's name as its validator's refused set holds it."""
        return self.field.rpartition(".")[2]


class Report:
    """One envelope's validation: the violations found, the fields of the object being
    checked (its header, then its message) that were refused so far (rules that read them
    are skipped: one mistake, one report) and the dimensions its tensors bound. The ids a
    violation carries are read from the header when one is reported (valid envelopes never
    pay for them)."""

    __slots__ = ("bad", "dims", "fail_fast", "header", "ids_of", "out", "signature")

    def __init__(
        self,
        ids_of: Callable[[Any], Ids],
        header: Any,
        fail_fast: bool,
        dims: dict[str, int] | None = None,
    ) -> None:
        self.out: list[Violation] = []
        self.ids_of = ids_of
        self.header = header
        self.fail_fast = fail_fast
        self.bad: set[str] = set()
        self.dims: dict[str, int] = {} if dims is None else dims
        #: the message's tensor signature (``tensors``), None when a tensor is not dense
        self.signature: tuple[object, ...] | None = None

    def add(self, rule: Rule, actual: str, expected: str | None = None) -> None:
        """Report a broken ``rule`` (``expected`` when it is computed, as a derived value is)."""
        self.out.append(
            Violation(
                rule.code,
                rule.field,
                rule.expected if expected is None else expected,
                actual,
                rule.rule or f"{rule.code}: {rule.expected}",
                rule.fm,
                rule.message,
                self.ids_of(self.header),
            )
        )
        if self.fail_fast:
            raise Stop

    def fail(self, rule: Rule, value: object) -> None:
        """``rule`` is broken by a field holding ``value``."""
        self.add(rule, show(value))

    def refuse(self, rule: Rule, value: object) -> None:
        """The field's value is ill-typed or out of range: later rules must not read it."""
        self.bad.add(rule.key)
        self.add(rule, show(value))

    def differs(self, rule: Rule, value: object, want: object) -> None:
        """A derived field or a plan member holds ``value`` where ``want`` belongs."""
        self.add(rule, show(value), show(want))

    def broken(self, rule: Rule, *values: tuple[str, object]) -> None:
        """An invariant does not hold; ``values`` are its sides as (text, value)."""
        self.add(rule, sides(*values))

    def tensors(self, ts: tuple[object, ...], g: TensorGroup) -> None:
        """``tensor`` for each present tensor of a message (``ts`` in ``g``'s order, None
        where absent).

        A stream sends the same dtypes and shapes envelope after envelope: when every tensor
        is dense and their dtypes and shapes together passed every check before, only the
        dimensions they bind are bound again. (The conjugate bit needs no check on that
        path: only complex tensors carry it, and the wire carries no complex dtype.)"""
        key: list[object] = []
        for t in ts:
            if t is None:
                key.append(None)
            elif (
                (type(t) is _TENSOR or type(t) is _PARAMETER)
                and t.layout is _STRIDED
                and not t.is_nested
                and not t.is_neg()
                # bytes at an address: neither meta nor a zero tensor (one call for two)
                and (t.data_ptr() or (not t.is_meta and not t._is_zerotensor()))
            ):
                key.append(t.dtype)
                key.append(t.shape)
            else:
                break
        else:
            self.signature = signature = tuple(key)
            binds = g.seen.get(signature)
            if binds is not None and not self.dims:
                self.dims.update(binds)
                return
            if not self.dims and _BOOL not in key:  # bool bytes are checked every time
                found = len(self.out)
                self._each(ts, g)
                if len(self.out) == found:
                    g.remember(signature, self.dims)
                return
        self._each(ts, g)

    def _each(self, ts: tuple[object, ...], g: TensorGroup) -> None:
        for t, f in zip(ts, g.fields, strict=True):
            if t is not None:
                self.tensor(t, f)

    def tensor(self, t: object, f: TensorField) -> None:
        """Type, dtype, shape (binding dimensions) and bool bytes of a present tensor."""
        if not is_dense(t):
            self.refuse(f.type_rule, t)
            return
        assert isinstance(t, torch.Tensor)
        bad = self.bad
        if t.dtype not in f.dtypes:
            bad.add(f.name)
            self.add(f.dtype_rule, dtype_name(t.dtype))
        # a tensor of the wrong dtype binds no dimension (one mistake, one report)
        problem = shape_problem(t, f.shape, self.dims if f.name not in bad else {}, f.limit)
        if problem is not None:
            bad.add(f.name)
            self.add(f.shape_rule, problem)
        elif f.bool_rule is not None and t.dtype is torch.bool:
            # a receiver refuses bool bytes other than 0 and 1: refuse them before frame 0
            problem = bool_bytes_problem(t)
            if problem is not None:
                bad.add(f.name)
                self.add(f.bool_rule, problem)


class TensorField:
    """A tensor field as the codec sees it: its dtypes, shape pattern and element bound,
    its manifest words (a dtype code, then one word per dimension) and its rules."""

    __slots__ = (
        "bool_rule",
        "codes",
        "dtype_rule",
        "dtypes",
        "limit",
        "name",
        "shape",
        "shape_rule",
        "type_rule",
        "width",
        "word",
    )

    def __init__(
        self,
        name: str,
        word: int,
        dtypes: tuple[torch.dtype, ...],
        shape: tuple[DimPattern, ...],
        limit: int,
        rules: tuple[Rule, Rule, Rule] | tuple[Rule, Rule, Rule, Rule],
    ) -> None:
        self.name = name
        self.word = word
        self.width = 1 + len(shape)
        self.dtypes = dtypes
        self.codes = tuple(DTYPE_BY_TORCH[d].code for d in dtypes)
        self.shape = shape
        self.limit = limit
        self.type_rule, self.dtype_rule, self.shape_rule = rules[:3]
        self.bool_rule = rules[3] if len(rules) == 4 else None

    def put(
        self,
        t: torch.Tensor,
        device: torch.device | str | None,
        words: list[int],
        tensors: list[torch.Tensor],
        entries: list[Entry],
    ) -> None:
        """Materialize ``t`` on ``device`` and write its manifest words."""
        t = materialize(t, device)
        if t.dtype not in DTYPE_BY_TORCH:  # changed since it was checked (``TensorGroup.put``)
            raise TensorsChanged([Change("dtype", self.name, "a wire dtype", dtype_name(t.dtype))])
        entries.append(put_tensor(words, self.word, self.name, t))
        tensors.append(t)

    def read(self, w: list[int], dims: dict[str, int]) -> Entry:
        """The manifest entry a peer announced, checked before anything is allocated."""
        return read_tensor(w, self.word, self.name, self.codes, self.shape, dims, self.limit)


def _described(t: tuple[object, ...] | None) -> str:
    if t is None:
        return "absent"
    dtype, shape = t
    assert isinstance(shape, tuple)
    return f"{dtype_name(dtype)}{list(shape)}"


class Change(NamedTuple):
    """A tensor field whose tensor is not what ``validate`` checked."""

    code: str  # "dtype" or "shape" (a rank or a size, or present where it was absent)
    field: str
    checked: str
    now: str


class TensorsChanged(Exception):
    """A tensor's dtype or shape at encode is not what ``validate`` checked a moment before
    (changed in place meanwhile: by another thread, or through a view of it). Frame 0 is
    written from the tensors as they are, so sending them would announce a layout nobody
    checked; ``prepare`` turns this into ``EnvelopeInvalid`` and nothing is sent."""

    def __init__(self, changed: list[Change]) -> None:
        super().__init__("; ".join(f"{c.field}: checked {c.checked}, now {c.now}" for c in changed))
        self.changed = changed

    def violations(self, ids: Ids) -> list[Violation]:
        return [
            Violation(
                c.code,
                c.field,
                f"{c.checked}, as validate checked it",
                c.now,
                rule="a tensor stays as validated until it is laid out",
                message="the tensor changed in place between validate and encode",
                ids=ids,
            )
            for c in self.changed
        ]


class TensorGroup:
    """A message's tensor fields in field order (the first to hold a dimension binds it),
    and what a tensor signature (each field's dtype and shape, None for an absent one)
    decides once it has been seen: the dimensions it binds (``seen``: it passed every
    check) and its manifest words and segment plan (``plans``)."""

    __slots__ = ("fields", "plans", "seen", "span", "wire")

    def __init__(self, fields: tuple[TensorField, ...]) -> None:
        self.fields = fields
        self.seen: dict[tuple[object, ...], dict[str, int]] = {}
        #: the fields' indices in wire order (their manifest words ascend in it)
        self.wire = tuple(sorted(range(len(fields)), key=lambda i: fields[i].word))
        lo = min(f.word for f in fields)
        hi = max(f.word + f.width for f in fields)
        if hi - lo != sum(f.width for f in fields):  # the compiler lays them out in a run
            raise ValueError(f"tensor manifests in words {lo}..{hi} are not one run of words")
        #: the frame 0 words the manifests fill
        self.span = (lo, hi)
        self.plans: dict[
            tuple[object, ...], tuple[list[int], tuple[TensorSlot, ...], tuple[int, ...]]
        ] = {}

    def put(
        self,
        ts: tuple[torch.Tensor | None, ...],
        signature: tuple[object, ...] | None,
        device: torch.device | str | None,
        words: list[int],
    ) -> tuple[list[torch.Tensor], tuple[TensorSlot, ...], tuple[int, ...]]:
        """Materialize the present tensors (``ts`` in field order) on ``device``, in wire
        order, and write their manifest words; with the segment plan. ``signature`` is the
        one ``Report.tensors`` found for these tensors: a signature seen before has its
        manifest words and plan kept, so only the tensors are materialized. A tensor whose
        dtype or shape is not what ``validate`` checked (changed in place since) raises
        ``TensorsChanged``: nothing is laid out from it."""
        plan = self.plans.get(signature) if signature is not None else None
        if plan is not None:
            manifest, slots, sizes = plan
            tensors = [materialize(t, device) for i in self.wire if (t := ts[i]) is not None]
            for t, slot in zip(tensors, slots, strict=True):
                if t.dtype is not slot.dtype.torch_dtype or t.shape != slot.shape:
                    break
            else:
                lo, hi = self.span
                words[lo:hi] = manifest
                return tensors, slots, sizes
        if signature is not None:  # before a word is written (a dtype the wire lacks, too)
            now = {
                f.name: (t.dtype, t.shape)
                for f, t in zip(self.fields, ts, strict=True)
                if t is not None
            }
            changed = self._changed(signature, now)
            if changed:
                raise TensorsChanged(changed)
        tensors = []
        entries: list[Entry] = []
        for i in self.wire:
            t = ts[i]
            if t is not None:
                self.fields[i].put(t, device, words, tensors, entries)
        slots, sizes = plan_segments(entries)
        if signature is not None:
            # changed while being laid out: frame 0 would describe tensors nobody checked
            laid = {name: (wd.torch_dtype, shape) for name, wd, shape in entries}
            changed = self._changed(signature, laid)
            if changed:
                raise TensorsChanged(changed)
            if len(self.plans) >= SEEN_LIMIT:
                self.plans.clear()
            lo, hi = self.span
            self.plans[signature] = (words[lo:hi], slots, sizes)
        return tensors, slots, sizes

    def _changed(
        self, signature: tuple[object, ...], now: Mapping[str, tuple[object, tuple[int, ...]]]
    ) -> list[Change]:
        """The fields whose tensor ``now`` (by name: dtype and shape) is not the one
        ``signature`` describes (in field order: what ``validate`` checked)."""
        out = []
        at = 0
        for f in self.fields:
            if signature[at] is None:
                checked: tuple[object, ...] | None = None
                at += 1
            else:
                checked = signature[at : at + 2]
                at += 2
            hit = now.get(f.name)
            if hit != checked:
                code = "dtype" if hit and checked and hit[0] is not checked[0] else "shape"
                out.append(Change(code, f.name, _described(checked), _described(hit)))
        return out

    def remember(self, signature: tuple[object, ...], dims: dict[str, int]) -> None:
        """Keep a signature that passed (bounded: a sender of ever new shapes costs the full
        checks, never unbounded memory)."""
        if len(self.seen) >= SEEN_LIMIT:
            self.seen.clear()
        self.seen[signature] = dict(dims)
