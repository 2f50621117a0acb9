"""The transport conformance kit: ``check_transport`` runs the same cases on the real
``Channel`` over any ``Transport`` (docs/runtime.md, writing a transport; docs/architecture.md,
"How to add a transport").

Each run spawns ``world`` processes joined by a gloo world group; in each, ``make_pair(rank,
world)`` builds the transport and the rank plays its part: rank 0 is the source, the others
receive. Every run has a hard timeout: a rank still alive when it expires is killed and the
case fails with every rank's stderr, so a hang is a failure, never a stalled test.

The cases:

* ``stream``: envelopes of one layout (three, so the head reaches steady state), then of
  another, a NOOP and SHUTDOWN arrive byte-identical and in order; a duplicate and a
  regressing sequence id are refused on the source (``OrderingError``) without a
  collective, and the stream goes on.
* ``error``: an ERROR frame arrives with its reason (the reason only on tpwire's frames).
* ``integrity-checksum``, ``integrity-fingerprint``: a hostile frame 0 poisons the receiver
  with the wire error's code (``ChannelPoisoned``), never a hang or a traceback; skipped on
  a transport with a wire of its own (``Transport.carrier``), which sends no tpwire frames.
* ``poison-source-killed``, ``poison-receiver-killed``: a peer SIGKILLed mid-stream; every
  survivor exits 86 with the POISONED line, or 87 with the WATCHDOG line (a transport that
  blocks on a dead peer).
* ``watchdog``: the source SIGSTOPs itself; every receiver exits 87 with the WATCHDOG line
  within ``watchdog_s`` plus ``slack_s``.

The first four share one run (a channel each, one after the other, over one transport);
the others end processes and run alone.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import multiprocessing as mp
import os
import pickle
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.distributed as dist

from tpwire.runtime import wire
from tpwire.runtime.bindings import Bindings, bindings_of
from tpwire.runtime.channel import Channel, ChannelOptions, ChannelPoisoned, OrderingError
from tpwire.runtime.policy import EXIT_POISONED, EXIT_WATCHDOG
from tpwire.runtime.transport import Transport
from tpwire.runtime.wire import ErrorCode, Reason

__all__ = ["CASES", "CaseOutcome", "KitReport", "KitStream", "check_transport", "kit_stream"]

#: ``make_pair(rank, world)``: a picklable top-level callable run in each rank's process
MakePair = Callable[[int, int], Transport]
#: a ``(header, message)`` pair of the protocol
Envelope = tuple[Any, Any]

#: every case, in the order they run; ``RUNS`` groups them by process world
CASES = (
    "stream",
    "error",
    "integrity-checksum",
    "integrity-fingerprint",
    "poison-source-killed",
    "poison-receiver-killed",
    "watchdog",
)
RUNS: tuple[tuple[str, ...], ...] = (
    ("stream", "error", "integrity-checksum", "integrity-fingerprint"),
    ("poison-source-killed",),
    ("poison-receiver-killed",),
    ("watchdog",),
)
#: the cases that end processes (each runs alone)
FATAL = frozenset({"poison-source-killed", "poison-receiver-killed", "watchdog"})
DEFAULT_PROTOCOL = "tpwire.generated.tp_control"
#: the ERROR case's reason (not ASCII: the reason is UTF-8 on the wire)
ERROR_TEXT = "kit: stopped on purpose (ü)"
#: the largest payload the kit draws (bytes): small envelopes keep a run short
MAX_PAYLOAD = 64 * 1024
#: the receiver the ``poison-receiver-killed`` case kills
KILLED_RECEIVER = 1
_PRELOAD = ["torch", "torch.distributed", "tpwire.runtime.channel", __name__]
_TAIL = 1500


# -- what the kit reports ---------------------------------------------------------------


@dataclass(frozen=True)
class CaseOutcome:
    """One case: "passed", "skipped", "failed" or "not run", and what was seen or why."""

    case: str
    status: str
    detail: str = ""


@dataclass(frozen=True)
class KitReport:
    """What ``check_transport`` found, per case."""

    transport: str
    protocol: str
    world: int
    cases: tuple[CaseOutcome, ...]
    seconds: float
    #: each failed case's ranks' stderr tails
    logs: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def with_status(self, status: str) -> list[str]:
        return [c.case for c in self.cases if c.status == status]

    @property
    def passed(self) -> list[str]:
        return self.with_status("passed")

    @property
    def skipped(self) -> list[str]:
        return self.with_status("skipped")

    @property
    def failed(self) -> list[str]:
        return self.with_status("failed")

    def __str__(self) -> str:
        lines = [
            f"transport kit: {self.transport} ({self.protocol}, world {self.world}, "
            f"{self.seconds:.1f} s)"
        ]
        lines += [f"  {c.status:8} {c.case}: {c.detail}" for c in self.cases]
        return "\n".join(lines)


# -- the envelopes ----------------------------------------------------------------------


@dataclass(frozen=True)
class KitStream:
    """The envelopes every case sends: ``first`` share one layout, ``second`` another."""

    first: tuple[Envelope, ...]
    second: tuple[Envelope, ...]

    @property
    def payloads(self) -> tuple[Envelope, ...]:
        return (*self.first, *self.second)


def kit_stream(protocol: ModuleType, *, draws: int = 80) -> KitStream:
    """Small valid envelopes of ``protocol``, drawn (derandomized) from its generated
    strategies: three of the most common layout that has bytes, two of another, numbered
    (``numbered``) from 0; the header's epoch stays where the first one has it."""
    from hypothesis import HealthCheck, Phase, given, settings

    from tpwire.testing.registration import companion

    bindings = bindings_of(protocol)
    kinds = sorted(bindings.messages)
    found: list[Envelope] = []

    @settings(
        max_examples=draws,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(companion(protocol).valid_envelopes(max_extra=1, kinds=kinds))
    def collect(envelope: Envelope) -> None:
        found.append(envelope)

    collect()
    return _pick(bindings, found)


def _layout(bindings: Bindings[Any, Any], envelope: Envelope) -> tuple[object, ...]:
    header, msg = envelope
    sizes = bindings.prepare(msg, header).sizes
    tensors = [
        (f.name, str(v.dtype), tuple(v.shape))
        for f in dataclasses.fields(msg)
        if isinstance(v := getattr(msg, f.name), torch.Tensor)
    ]
    return (type(msg).__name__, sizes, tuple(tensors))


def _pick(bindings: Bindings[Any, Any], found: Sequence[Envelope]) -> KitStream:
    groups: dict[tuple[object, ...], list[Envelope]] = {}
    for env in found:
        if env[1] is None or not _carries_cached(bindings, env[1]):
            continue
        key = _layout(bindings, env)
        if 0 < sum(_sizes(key)) <= MAX_PAYLOAD:
            groups.setdefault(key, []).append(env)
    ranked = sorted(groups.items(), key=lambda kv: -len(kv[1]))
    # the second layout differs in its segments' sizes (the head's layout changes with
    # it), preferably one whose segments do not fit the first one's head: they follow it
    top = _sizes(ranked[0][0]) if ranked else ()
    others = [g for key, g in ranked[1:] if _sizes(key) != top]
    others.sort(key=lambda g: _fits(_sizes(_layout(bindings, g[0])), top))
    if not others or len(ranked[0][1]) < 3:
        raise ValueError(f"{bindings.protocol}: the draws gave no two small payload layouts")
    first, second = ranked[0][1][:3], others[0][:2]
    epoch = bindings.roles.epoch
    base = {epoch: getattr(first[0][0], epoch)} if epoch is not None else {}
    out = []
    for i, (header, msg) in enumerate((*first, *second)):
        header, msg = numbered(bindings, (dataclasses.replace(header, **base), msg), i)
        problems = bindings.validate(msg, header)
        if problems:
            raise ValueError(f"{bindings.protocol}: a kit envelope is invalid: {problems[0]}")
        out.append((header, msg))
    return KitStream(tuple(out[:3]), tuple(out[3:]))


def numbered(bindings: Bindings[Any, Any], envelope: Envelope, n: int) -> Envelope:
    """Envelope ``n`` of a stream: sequence id ``n + 1``, chunk id ``n``, and every epoch of
    a field cached by one (``cached_by``) at ``n + 1``: each envelope carries and bumps them
    all, which the rules across envelopes allow, with one layout (docs/spec-language.md)."""
    header, msg = envelope
    roles = bindings.roles
    ids = {roles.sequence: n + 1}
    if roles.chunk is not None:
        ids[roles.chunk] = n
    epochs = {c.epoch: n + 1 for c in bindings.cached.get(type(msg), ())}
    return dataclasses.replace(header, **ids), dataclasses.replace(msg, **epochs)


def _carries_cached(bindings: Bindings[Any, Any], msg: Any) -> bool:
    return all(getattr(msg, c.field) is not None for c in bindings.cached.get(type(msg), ()))


def _sizes(layout: tuple[object, ...]) -> tuple[int, ...]:
    sizes: tuple[int, ...] = layout[1]  # type: ignore[assignment]
    return sizes


def _fits(sizes: tuple[int, ...], head: tuple[int, ...]) -> bool:
    return all(i < len(head) and n <= head[i] for i, n in enumerate(sizes))


def differences(expected: Envelope, got: Envelope) -> list[str]:
    """Where ``got`` is not byte-identical to ``expected`` (header, then message fields)."""
    out: list[str] = []
    for where, want, have in (("header", expected[0], got[0]), ("msg", expected[1], got[1])):
        if want is None or have is None or type(want) is not type(have):
            if not (want is None and have is None):
                out.append(f"{where}: {type(want).__name__} sent, {type(have).__name__} received")
            continue
        for f in dataclasses.fields(want):
            a, b = getattr(want, f.name), getattr(have, f.name)
            if not _same_value(a, b):
                out.append(f"{where}.{f.name}: {_short(a)} sent, {_short(b)} received")
    return out


def _same_value(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return False
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        raw_a = a.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
        raw_b = b.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
        return bool(torch.equal(raw_a, raw_b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def _short(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor({value.dtype}, {list(value.shape)})"
    return repr(value)[:80]


# -- one rank's part --------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    """One run: the cases its ranks play, one after the other, and what they need."""

    make_pair: MakePair
    protocol: str
    world: int
    port: int
    out: str
    cases: tuple[str, ...]
    #: the ``KitStream``, pickled by value (a tensor given to a child as it is would travel
    #: through shared memory)
    stream: bytes
    watchdog_s: float
    timeout_s: float

    @property
    def frames_watchdog_s(self) -> float:
        """The watchdog of the cases that end no process: a stuck step says where it is
        stuck (exit 87 naming it) before the run's timeout kills every rank."""
        return max(4 * self.watchdog_s, min(20.0, self.timeout_s / 3))


class _Skip(Exception):
    """A case that does not apply to this transport (the reason is its text)."""


#: what a case found: problems (empty: passed) and facts for the report
Found = tuple[list[str], dict[str, Any]]


class _Rank:
    """One rank's part in a run: its transport, the protocol and its notes."""

    def __init__(self, job: _Job, rank: int, transport: Transport) -> None:
        self.job = job
        self.rank = rank
        self.transport = transport
        self.bindings: Bindings[Any, Any] = bindings_of(importlib.import_module(job.protocol))
        self.stream: KitStream = pickle.loads(job.stream)
        self.source = rank == 0
        #: a wire of its own (compat): no tpwire frames, so no hostile ones either
        self.carried = transport.carrier(self.bindings, None) is not None
        self.puts = 0
        #: SIGKILL this rank right after its put number ``kill_after`` (mid-envelope)
        self.kill_after: int | None = None
        put = transport.put

        def counted(tensor: torch.Tensor, tag: int, *, frame0: bool) -> None:
            self.puts += 1
            put(tensor, tag, frame0=frame0)
            if self.puts == self.kill_after:
                os.kill(os.getpid(), signal.SIGKILL)

        # the channel, and a carrier, call ``transport.put``: counting them shows a refused
        # send never reached the transport
        setattr(transport, "put", counted)  # noqa: B010 (mypy refuses assigning a method)

    def channel(self, poison: str, watchdog_s: float) -> Channel[Any, Any, Any]:
        options = ChannelOptions(poison=poison, watchdog_s=watchdog_s)
        return Channel(self.bindings, self.transport, options).open()

    def note(self, case: str, **fields: Any) -> None:
        _note(self.job, self.rank, case, **fields)

    def facts(self) -> dict[str, Any]:
        t = self.transport
        return {
            "type": type(t).__name__,
            "kind": t.kind,
            "carrier": self.carried,
            "sends": t.sends(),
            "frame0_apart": t.frame0_apart(),
        }


def _note(job: _Job, rank: int, case: str, **fields: Any) -> None:
    """One line of a rank's notes (the parent reads them after the run)."""
    line = json.dumps({"case": case, **fields}, default=str)
    with open(f"{job.out}/rank{rank}.jsonl", "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


def _send_counted(r: _Rank, ch: Channel[Any, Any, Any], envelopes: Iterable[Envelope]) -> list[int]:
    puts = []
    for header, msg in envelopes:
        before = r.puts
        ch.send(msg, header)
        puts.append(r.puts - before)
    return puts


def _refused_ids(r: _Rank, ch: Channel[Any, Any, Any]) -> list[str]:
    """A duplicate and a regressing sequence id: ``OrderingError`` before any put."""
    seq = r.bindings.roles.sequence
    last = getattr(r.stream.first[-1][0], seq)
    header, msg = r.stream.second[0]
    problems = []
    for what, value in (("duplicate", last), ("regressing", last - 1)):
        before = r.puts
        try:
            ch.send(msg, dataclasses.replace(header, **{seq: value}))
            problems.append(f"a {what} {seq} ({value} after {last}) was sent")
        except OrderingError:
            pass
        if r.puts != before:
            problems.append(
                f"the refused {what} {seq} reached the transport ({r.puts - before} put(s))"
            )
    return problems


def _stream_source(r: _Rank, ch: Channel[Any, Any, Any]) -> Found:
    puts = _send_counted(r, ch, r.stream.first)
    problems = _refused_ids(r, ch)
    puts += _send_counted(r, ch, r.stream.second)
    if r.bindings.noop is not None:
        ch.noop()
    ch.shutdown()
    ch.close()
    steady = not r.carried and not r.transport.frame0_apart()
    if steady and puts[2] != 1:
        problems.append(
            f"the third envelope of one layout took {puts[2]} puts, not 1 (steady state)"
        )
    return problems, {"puts": puts, "steady": steady}


def _expected_order(r: _Rank) -> list[tuple[str, int]]:
    b = r.bindings
    seq = b.roles.sequence
    order = [(b.action_of(h).name, getattr(h, seq)) for h, _ in r.stream.payloads]
    last = order[-1][1]
    controls = [b.noop] if b.noop is not None else []
    order += [(a.name, last + 1 + i) for i, a in enumerate([*controls, b.shutdown])]
    return order


def _stream_receiver(r: _Rank, ch: Channel[Any, Any, Any]) -> Found:
    b, seq = r.bindings, r.bindings.roles.sequence
    expected = list(r.stream.payloads)
    problems: list[str] = []
    order: list[tuple[str, int]] = []
    while True:
        got = ch.recv()
        order.append((got.action.name, getattr(got.header, seq)))
        if got.action in b.payload_actions and expected:
            want = expected.pop(0)
            where = f"{b.action_of(want[0]).name} {seq}={getattr(want[0], seq)}"
            problems += [f"{where}: {d}" for d in differences(want, (got.header, got.msg))]
        if got.action in b.terminal:
            break
    ch.close()
    if order != _expected_order(r):
        problems.append(f"arrived in the order {order}, sent {_expected_order(r)}")
    return problems, {"arrived": len(order)}


def _stream(r: _Rank) -> Found:
    ch = r.channel("raise", r.job.frames_watchdog_s)
    return _stream_source(r, ch) if r.source else _stream_receiver(r, ch)


def _error(r: _Rank) -> Found:
    b = r.bindings
    ch = r.channel("raise", r.job.frames_watchdog_s)
    header, msg = r.stream.first[0]
    if r.source:
        ch.send(msg, header)
        ch.error(ERROR_TEXT, ErrorCode.USER)
        ch.close()
        return [], {}
    got = ch.recv()
    problems = differences((header, msg), (got.header, got.msg))
    got = ch.recv()
    facts: dict[str, Any] = {"reason": str(got.reason)}
    if got.action is not b.error:
        problems.append(f"{got.action.name} arrived instead of {b.error.name}")
    elif r.carried:
        facts["reason"] = "not checked: a wire of its own (Transport.carrier) carries none"
    elif got.reason != Reason(ErrorCode.USER, ERROR_TEXT):
        problems.append(f"the reason arrived as {got.reason!r}, sent {ERROR_TEXT!r}")
    ch.close()
    return problems, facts


def _hostile_frame0(r: _Rank, code: str) -> tuple[Any, torch.Tensor]:
    """A payload-free frame 0 (NOOP, else SHUTDOWN) broken the way ``code`` names."""
    b = r.bindings
    header = b.control_header(None, b.noop if b.noop is not None else b.shutdown)
    words: list[int] = b.encode(None, header).frame0.tolist()
    if code == "fingerprint":
        words[wire.W_FINGERPRINT] ^= 0x5A5A
        return header, wire.seal(words)
    frame0 = wire.seal(words)
    frame0[-1] = int(frame0[-1]) ^ 0x5A5A  # the checksum word
    return header, frame0


def _integrity(r: _Rank, code: str) -> Found:
    if r.carried:
        raise _Skip("a wire of its own (Transport.carrier) sends no tpwire frames to forge")
    ch = r.channel("raise", r.job.frames_watchdog_s)
    if r.source:
        header, frame0 = _hostile_frame0(r, code)
        # the hook tests send forged frames through: no preflight, no ordering check
        ch.sender.transmit(wire.Frames(frame0, ()), header)
        ch.close()
        return [], {}
    try:
        got = ch.recv()
    except ChannelPoisoned as exc:
        ch.close()
        text = str(exc)
        if f"[{code}]" not in text:
            return [f"poisoned without the wire error's code [{code}]: {text}"], {}
        return [], {"poisoned": text}
    ch.close()
    return [f"a frame 0 with a bad {code} was accepted as {got.action.name}"], {}


def _source_killed(r: _Rank) -> Found:
    ch = r.channel("exit", r.job.watchdog_s)
    if r.source:
        _send_counted(r, ch, r.stream.first[:2])
        # killed right after the next envelope's head: between its frame 0 and the segments
        # that follow it, where the second layout's do not fit the first one's head
        r.kill_after = r.puts + 1
        _send_counted(r, ch, r.stream.second[:1])
        os.kill(os.getpid(), signal.SIGKILL)
    return _receive_until_stopped(r, ch)


def _receive_until_stopped(r: _Rank, ch: Channel[Any, Any, Any]) -> Found:
    while True:
        got = ch.recv()
        if got.action in r.bindings.terminal:
            return [f"{got.action.name} arrived from a source that never sent it"], {}


def _receiver_killed(r: _Rank) -> Found:
    ch = r.channel("exit", r.job.watchdog_s)
    if r.rank == KILLED_RECEIVER:
        ch.recv()
        ch.recv()
        os.kill(os.getpid(), signal.SIGKILL)
    if not r.source:
        return _receive_until_stopped(r, ch)
    start = time.monotonic()
    sent = 0
    while time.monotonic() - start < r.job.timeout_s / 2:
        header, msg = numbered(r.bindings, r.stream.first[sent % len(r.stream.first)], sent)
        ch.send(msg, header)
        sent += 1
    return [f"sent {sent} envelopes after rank {KILLED_RECEIVER} was killed, never poisoned"], {}


def _watchdog(r: _Rank) -> Found:
    ch = r.channel("exit", r.job.watchdog_s)
    header, msg = r.stream.first[0]
    if r.source:
        ch.send(msg, header)
        os.kill(os.getpid(), signal.SIGSTOP)
        return ["the source went on after SIGSTOP"], {}
    ch.recv()
    r.note("watchdog", waiting_since=time.time())
    got = ch.recv()
    return [f"{got.action.name} arrived from a stopped source"], {}


_PARTS: dict[str, Callable[[_Rank], Found]] = {
    "stream": _stream,
    "error": _error,
    "integrity-checksum": lambda r: _integrity(r, "checksum"),
    "integrity-fingerprint": lambda r: _integrity(r, "fingerprint"),
    "poison-source-killed": _source_killed,
    "poison-receiver-killed": _receiver_killed,
    "watchdog": _watchdog,
}


def _rank_main(job: _Job, rank: int) -> None:
    """A spawned rank: gloo, the transport, then each case of the run; never returns."""
    log = os.open(f"{job.out}/rank{rank}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    for key in [k for k in os.environ if k.startswith("TPWIRE_JOURNAL")]:
        del os.environ[key]  # the kit checks the transport: no journal from the caller's env
    case = "setup"
    try:
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{job.port}",
            rank=rank,
            world_size=job.world,
            timeout=timedelta(seconds=job.timeout_s),
        )
        transport = job.make_pair(rank, job.world)
        if not isinstance(transport, Transport):
            raise TypeError(f"make_pair returned {type(transport).__name__}, not a Transport")
        if rank == 0 and not transport.sends():
            raise ValueError("rank 0 is the kit's source: make_pair(0, world) must send")
        r = _Rank(job, rank, transport)
        r.note(case, facts=r.facts())
        for case in job.cases:
            try:
                problems, facts = _PARTS[case](r)
                r.note(case, problems=problems, facts=facts)
            except _Skip as skip:
                r.note(case, skipped=str(skip))
        if not FATAL & set(job.cases):
            dist.barrier()  # every rank done before any leaves: a peer may still be reading
    except BaseException:
        text = traceback.format_exc()
        print(text, file=sys.stderr, flush=True)
        _note(job, rank, case, problems=[f"raised {text.strip().splitlines()[-1]}"])
        os._exit(1)
    os._exit(0)  # skip interpreter teardown of a group whose peers may be gone


# -- the parent: runs and verdicts ------------------------------------------------------


@dataclass(frozen=True)
class _RankRun:
    rank: int
    exitcode: int | None
    log: str
    #: the rank's notes by case
    notes: Mapping[str, Mapping[str, Any]]
    #: ``time.time()`` when the parent saw it end (None: it never did)
    ended_at: float | None

    def tail(self) -> str:
        return f"--- rank {self.rank} (exit {self.exitcode}) stderr tail:\n{self.log[-_TAIL:]}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _spawn(job: _Job, stopped: frozenset[int]) -> tuple[list[_RankRun], list[int]]:
    """Run ``job`` on ``world`` processes; ``stopped`` ranks SIGSTOP themselves and are
    killed once the others ended. Returns each rank's run and the ranks that hung."""
    ctx: Any = mp.get_context("forkserver")  # ranks fork from a server that imported torch
    ctx.set_forkserver_preload(_PRELOAD)
    procs = [ctx.Process(target=_rank_main, args=(job, r), daemon=True) for r in range(job.world)]
    ended: dict[int, float] = {}
    awaited = set(range(job.world)) - stopped
    for p in procs:
        p.start()
    start = time.monotonic()
    while time.monotonic() - start < job.timeout_s and not awaited <= ended.keys():
        for r, p in enumerate(procs):
            if r not in ended and not p.is_alive():
                ended[r] = time.time()
        time.sleep(0.02)
    hung = [r for r, p in enumerate(procs) if p.is_alive() and r not in stopped]
    for p in procs:
        if p.is_alive():
            p.kill()
        p.join(5)
    return [_read_run(job, r, p.exitcode, ended.get(r)) for r, p in enumerate(procs)], hung


def _read_run(job: _Job, rank: int, exitcode: int | None, ended_at: float | None) -> _RankRun:
    out = Path(job.out)
    log = out / f"rank{rank}.log"
    notes: dict[str, dict[str, Any]] = {}
    jsonl = out / f"rank{rank}.jsonl"
    if jsonl.exists():
        for line in jsonl.read_text(encoding="utf-8").splitlines():
            note = json.loads(line)
            notes.setdefault(note["case"], {}).update(note)
    text = log.read_text(errors="replace") if log.exists() else ""
    return _RankRun(rank, exitcode, text, notes, ended_at)


def _judge_shared(job: _Job, runs: Sequence[_RankRun], hung: Sequence[int]) -> list[CaseOutcome]:
    """The cases that share one run, in order: a case some rank never finished fails, the
    ones after it did not run."""
    outcomes: list[CaseOutcome] = []
    broken = None
    for case in job.cases:
        if broken is not None:
            outcomes.append(CaseOutcome(case, "not run", f"{broken} failed first in its run"))
            continue
        notes = {run.rank: run.notes.get(case) for run in runs}
        missing = [r for r, n in notes.items() if n is None]
        if missing:
            how = f"hung (killed after {job.timeout_s:g} s)" if hung else "ended"
            exits = ", ".join(f"rank {run.rank}: exit {run.exitcode}" for run in runs)
            detail = f"ranks {missing} never finished it ({how}; {exits})"
            outcomes.append(CaseOutcome(case, "failed", detail))
            broken = case
            continue
        outcomes.append(_verdict(case, notes))
        broken = case if outcomes[-1].status == "failed" else None
    bad_exit = [run for run in runs if run.exitcode != 0]
    if broken is None and bad_exit and outcomes:
        exits = ", ".join(f"rank {run.rank}: exit {run.exitcode}" for run in bad_exit)
        last = outcomes.pop()
        outcomes.append(CaseOutcome(last.case, "failed", f"after it, {exits}"))
    return outcomes


def _verdict(case: str, notes: Mapping[int, Mapping[str, Any] | None]) -> CaseOutcome:
    problems = [f"rank {r}: {p}" for r, n in notes.items() if n for p in n.get("problems", ())]
    if problems:
        return CaseOutcome(case, "failed", "; ".join(problems))
    skipped = sorted({str(n["skipped"]) for n in notes.values() if n and "skipped" in n})
    if skipped:
        return CaseOutcome(case, "skipped", "; ".join(skipped))
    facts = {r: n.get("facts", {}) for r, n in notes.items() if n}
    shown = {f"rank {r}": f for r, f in facts.items() if f}
    return CaseOutcome(case, "passed", json.dumps(shown, sort_keys=True) if shown else "")


def _died(run: _RankRun) -> str | None:
    """How a survivor ended: exit 86 with its POISONED line or 87 with its WATCHDOG line
    (the line, shortened), or None when otherwise."""
    for code, word in ((EXIT_POISONED, "POISONED"), (EXIT_WATCHDOG, "WATCHDOG:")):
        lines = [line for line in run.log.splitlines() if word in line]
        if run.exitcode == code and lines:
            return f"exit {code} ({lines[-1][:160]})"
    return None


def _judge_fatal(
    job: _Job, runs: Sequence[_RankRun], hung: Sequence[int], ended: int, slack_s: float
) -> CaseOutcome:
    """A run that ends rank ``ended`` (SIGKILL, or SIGSTOP for the watchdog case): every
    other rank must exit 86 or 87 (the watchdog case: 87, in time) with its line."""
    (case,) = job.cases
    problems, seen = [], []
    for run in runs:
        note = run.notes.get(case, {})
        problems += [f"rank {run.rank}: {p}" for p in note.get("problems", ())]
        if run.rank == ended:
            continue
        how = _died(run)
        if case == "watchdog" and how is not None and run.exitcode != EXIT_WATCHDOG:
            how = None
        if how is None:
            want = "87 with the WATCHDOG line" if case == "watchdog" else "86 or 87 with its line"
            state = "hung" if run.rank in hung else f"exit {run.exitcode}"
            problems.append(f"rank {run.rank}: {state}, not {want}")
            continue
        seen.append(f"rank {run.rank}: {how}")
        since = note.get("waiting_since")
        if case == "watchdog" and since is not None and run.ended_at is not None:
            took = run.ended_at - float(since)
            seen[-1] += f" after {took:.1f} s"
            if took > job.watchdog_s + slack_s:
                problems.append(
                    f"rank {run.rank}: the watchdog took {took:.1f} s "
                    f"(watchdog_s {job.watchdog_s:g} + slack {slack_s:g})"
                )
    if problems:
        return CaseOutcome(case, "failed", "; ".join(problems))
    return CaseOutcome(case, "passed", "; ".join(seen))


def _protocol_module(protocol: ModuleType | str | None) -> ModuleType:
    if protocol is None:
        protocol = DEFAULT_PROTOCOL
    module = importlib.import_module(protocol) if isinstance(protocol, str) else protocol
    bindings_of(module)  # a generated protocol module, or a TypeError saying what to pass
    return module


def check_transport(
    make_pair: MakePair,
    *,
    protocol: ModuleType | str | None = None,
    world: int = 2,
    timeout_s: float = 60.0,
    watchdog_s: float = 2.0,
    slack_s: float = 5.0,
    cases: Iterable[str] | None = None,
) -> KitReport:
    """Run the conformance cases (``CASES``, or those named in ``cases``) on a real
    ``Channel`` over the transport ``make_pair(rank, world)`` builds in each of ``world``
    spawned processes (a picklable top-level callable, run after gloo is initialised: the
    world group is there for handshakes or to exchange addresses).

    ``protocol``: a generated protocol module or its import name (default tp_control), with
    its ``*_strategies`` module. ``timeout_s`` bounds each run (a rank still alive then is
    killed: the case fails); ``watchdog_s`` is the channels' watchdog in the cases that end
    processes. Returns the report; raises ``AssertionError`` naming each failed case, with
    its ranks' stderr tails."""
    module = _protocol_module(protocol)
    chosen = tuple(cases) if cases is not None else CASES
    unknown = sorted(set(chosen) - set(CASES))
    if unknown or world < 2:
        raise ValueError(f"unknown case(s) {unknown}" if unknown else "world must be 2 or more")
    try:
        pickle.dumps(make_pair)
    except Exception as exc:
        raise TypeError(f"make_pair must be a picklable top-level callable: {exc}") from None
    stream = pickle.dumps(kit_stream(module))
    started = time.monotonic()
    outcomes: list[CaseOutcome] = []
    logs: dict[str, str] = {}
    names: list[str] = []
    with tempfile.TemporaryDirectory(prefix="tpwire-kit-") as tmp:
        for i, group in enumerate(RUNS):
            wanted = tuple(c for c in group if c in chosen)
            if not wanted:
                continue
            out = Path(tmp) / f"run{i}"
            out.mkdir()
            job = _Job(
                make_pair,
                module.__name__,
                world,
                _free_port(),
                str(out),
                wanted,
                stream,
                watchdog_s,
                timeout_s,
            )
            found, runs = _run(job, slack_s)
            outcomes += found
            names += [str(run.notes.get("setup", {}).get("facts", {}).get("type")) for run in runs]
            for o in found:
                if o.status == "failed":
                    logs[o.case] = "\n".join(run.tail() for run in runs)
    name = next((n for n in names if n != "None"), getattr(make_pair, "__qualname__", "?"))
    report = KitReport(
        name, module.__name__, world, tuple(outcomes), time.monotonic() - started, logs
    )
    if report.failed:
        raise AssertionError(_failure_text(report))
    return report


def _run(job: _Job, slack_s: float) -> tuple[list[CaseOutcome], list[_RankRun]]:
    case = job.cases[0]
    if case not in FATAL:
        runs, hung = _spawn(job, frozenset())
        return _judge_shared(job, runs, hung), runs
    ended = {"poison-source-killed": 0, "poison-receiver-killed": KILLED_RECEIVER}.get(case, 0)
    stopped = frozenset({0}) if case == "watchdog" else frozenset()
    runs, hung = _spawn(job, stopped)
    return [_judge_fatal(job, runs, hung, ended, slack_s)], runs


def _failure_text(report: KitReport) -> str:
    failed = [c for c in report.cases if c.status == "failed"]
    lines = [
        f"transport kit: {report.transport} failed case(s) "
        + ", ".join(repr(c.case) for c in failed),
        str(report),
    ]
    for c in failed:
        lines.append(f"=== {c.case}: {c.detail}\n{report.logs.get(c.case, '')}")
    return "\n".join(lines)
