"""CPU codec costs per envelope, in one process: tpwire's ``validate``, ``encode`` (which
runs ``validate`` first) and ``decode`` (frame 0 checks, views, the receive-side
validation), next to python-jsonschema validating the same fields against the exported
schema and ``pickle`` round-tripping the same metadata (what the compat wire pickles)."""

from __future__ import annotations

import dataclasses
import functools
import json
import pickle
import statistics
import time
from collections.abc import Callable
from typing import Any

import jsonschema
import torch

from bench import envelopes as E
from bench import handwritten as H
from tpwire.codegen.schema import json_schema
from tpwire.runtime import tripwire, wire
from tpwire.runtime.checks import Report, TensorGroup
from tpwire.runtime.plain import to_plain


def _median_us(fn: Callable[[], object], n: int) -> tuple[float, float, float]:
    for _ in range(max(n // 10, 20)):
        fn()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t0)
    samples.sort()
    q = statistics.quantiles(samples, n=10)
    return statistics.median(samples) / 1e3, q[0] / 1e3, q[-1] / 1e3


def _meta(header: Any, msg: Any) -> dict[str, Any]:
    """What the compat wire pickles: the scalars and each tensor's dtype and shape."""
    meta: dict[str, Any] = {"header": dataclasses.asdict(header)}
    for f in dataclasses.fields(msg):
        v = getattr(msg, f.name)
        meta[f.name] = (str(v.dtype), tuple(v.shape)) if isinstance(v, torch.Tensor) else v
    return meta


def _schema_validator(proto: Any) -> jsonschema.Draft202012Validator:
    from tpwire.codegen.compiler import protocol_ir

    ir = protocol_ir(E.SPEC_DIR / f"{proto.__name__.rsplit('.', 1)[-1]}.yaml")
    return jsonschema.Draft202012Validator(json_schema(ir))


def _every_error(validator: jsonschema.Draft202012Validator, instance: object) -> list[Any]:
    return list(validator.iter_errors(instance))


def _pickle_round_trip(meta: dict[str, Any]) -> object:
    return pickle.loads(pickle.dumps(meta))


def measure(kinds: tuple[str, ...], n: int) -> list[dict[str, Any]]:
    """Every codec row, timed on one intra-op thread, as every rank runs (the hand-written
    baselines too: both sides under the same conditions)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _measure(kinds, n)
    finally:
        torch.set_num_threads(threads)


def _measure(kinds: tuple[str, ...], n: int) -> list[dict[str, Any]]:
    rows = []
    cases: list[tuple[str, Any, Any, Any]] = []
    for name in kinds:
        kind = E.KINDS[name]
        proto = kind.protocol()
        msg = kind.message(proto, 0)
        if msg is None or proto.__name__.startswith("tpwire_compiled"):
            continue
        cases.append((name, proto, E.header(proto, 1, 0), msg))
    from tpwire.generated import pp_contract

    pp_header = pp_contract.Header(
        call_id=1, chunk_index=0, cache_epoch=0, action=pp_contract.PPAction.INFER
    )
    cases.append(("pp", pp_contract, pp_header, E.pp_envelope(0)))
    for name, proto, header, msg in cases:
        validator = _schema_validator(proto)
        # strict JSON of the plain form: what a JSON-Schema check of the same fields sees
        instance = json.loads(json.dumps(to_plain(header, msg)))
        assert validator.is_valid(instance), name
        frames = proto.encode(msg, header)
        meta = _meta(header, msg)
        row: dict[str, Any] = {"kind": name, "tensor_bytes": E.tensor_bytes(msg)}
        row["validate"] = _median_us(functools.partial(proto.validate, msg, header), n)
        row["prepare"] = _median_us(functools.partial(proto.prepare, msg, header), n)
        row["encode"] = _median_us(functools.partial(proto.encode, msg, header), n)
        row["decode"] = _median_us(functools.partial(proto.decode, frames), n)
        # the frame 1 check alone: the sender's digest (inside prepare) and the receiver's
        # digest + padding + bool-byte check (inside decode)
        digest, check = _frame1_halves(proto, msg, header)
        row["digest"] = _median_us(digest, n)
        row["check"] = _median_us(check, n)
        # the input tripwire (bringup mode: every chunk on every rank)
        row["tripwire"] = _median_us(
            functools.partial(tripwire.digest_envelope, proto, msg, header), n
        )
        row["jsonschema"] = _median_us(
            functools.partial(_every_error, validator, instance), max(n // 10, 50)
        )
        row["pickle"] = _median_us(functools.partial(_pickle_round_trip, meta), n)
        if name in HANDWRITTEN_KINDS and H.MISSING is None:
            row.update(handwritten(header, msg, n))
        if name in HANDWRITTEN_KINDS:
            row["stages"] = stages(proto, header, msg, n)
        rows.append(row)
    return rows


#: The steps of tpwire's ``encode`` and ``decode``, each timed alone (``stages``).
STAGES = (
    ("send", "validate", "validate: types, ranges, dtypes, shapes, presence, invariants"),
    ("send", "words", "frame 0 words, tensors materialized, segments planned"),
    ("send", "digest", "xxh3-64 of frame 1 (into frame 0)"),
    ("send", "seal", "frame 0 sealed (its words packed, blake2b)"),
    ("send", "pack", "frame 1 packed (the small tensors into one buffer)"),
    ("receive", "frame0", "frame 0: checksum, fingerprint, header, manifest"),
    ("receive", "segments", "frame 1 segments checked (dtype, size, alignment)"),
    ("receive", "check", "frame 1 digest, padding and bool bytes checked"),
    ("receive", "views", "tensor views of frame 1"),
    ("receive", "message", "the message built (each slot set, as decode does)"),
    ("receive", "validation", "receive-side validation (ranges, presence, invariants)"),
)


def _frame1_halves(
    proto: Any, msg: Any, header: Any
) -> tuple[Callable[[], object], Callable[[], object]]:
    """The frame 1 check's two halves as calls: the sender's digest (inside ``prepare``) and
    the receiver's digest, padding and bool-byte check (inside ``decode``)."""
    prepared = proto.prepare(msg, header)
    frames = prepared.frames()
    manifest = proto.read_frame0(frames.frame0)
    digest = functools.partial(wire.frame1_digest, prepared.tensors, prepared.slots, prepared.sizes)
    check = functools.partial(
        wire.verify_frame1,
        manifest.slots,
        manifest.segment_nbytes,
        frames.segments,
        None,
        manifest.digest,
    )
    return digest, check


def stages(proto: Any, header: Any, msg: Any, n: int) -> dict[str, Any]:
    """Each step of ``encode`` and ``decode`` timed alone (medians): where the codec's time
    goes. ``words`` is ``prepare`` less ``validate`` and the digest; ``segments`` is
    ``finish`` less ``assemble``."""
    frames = proto.encode(msg, header)
    prepared = proto.prepare(msg, header)
    manifest = proto.read_frame0(frames.frame0)
    values = dict(manifest.scalars)
    values.update(manifest.views(frames.segments))
    built = wire.build(manifest.message, values)
    digest, check = _frame1_halves(proto, msg, header)
    t = {
        "validate": functools.partial(proto.validate, msg, header),
        "prepare": functools.partial(proto.prepare, msg, header),
        "digest": digest,
        "layout": prepared.frames,
        "seal": functools.partial(wire.seal, prepared.words),
        "frame0": functools.partial(proto.read_frame0, frames.frame0),
        "finish": functools.partial(manifest.finish, frames.segments),
        "assemble": functools.partial(manifest.assemble, frames.segments),
        "check": check,
        "views": functools.partial(manifest.views, frames.segments),
        "message": functools.partial(wire.build, manifest.message, values),
        "validation": functools.partial(manifest.validate, built, manifest.header),
    }
    m = {k: _median_us(f, n)[0] for k, f in t.items()}
    m["words"] = max(m["prepare"] - m["validate"] - m["digest"], 0.0)
    m["segments"] = max(m["finish"] - m["assemble"], 0.0)
    m["pack"] = max(m["layout"] - m["seal"], 0.0)
    group = _tensor_group(proto, msg)
    if group is not None:  # beside the steps: the part of ``validate`` its tensors take
        ts = tuple(getattr(msg, f.name) for f in group.fields)
        m["tensors"] = _median_us(functools.partial(_tensor_checks, proto, header, ts, group), n)[0]
    return {k: m[k] for k in (*(k for _, k, _ in STAGES), "tensors") if k in m}


def _tensor_group(proto: Any, msg: Any) -> TensorGroup | None:
    """The message's tensor fields as its generated module declares them."""
    for value in vars(proto).values():
        if isinstance(value, TensorGroup) and all(hasattr(msg, f.name) for f in value.fields):
            return value
    return None


def _tensor_checks(proto: Any, header: Any, ts: tuple[Any, ...], group: TensorGroup) -> None:
    """What ``validate`` does for a message's tensors: a report and its tensor checks (the
    signature kept: a stream's repeated layout)."""
    Report(proto._CODEC.ids, header, False).tensors(ts, group)


#: The envelopes the hand-written baselines model: tp_control's v1 INFER as shipped.
HANDWRITTEN_KINDS = ("small", "scope")


def handwritten(header: Any, msg: Any, n: int) -> dict[str, Any]:
    """The hand-written msgspec path's send and receive, and pydantic validating the same
    scalars (``bench/handwritten.py``); its receive is checked against the tensors sent."""
    raw, buf = H.send(header, msg)
    env, views = H.receive(raw, buf)
    for name, attr, _, _ in H.TENSORS:
        sent = getattr(msg, attr)
        assert (sent is None) == (name not in views), name
        assert sent is None or wire.tensors_identical(views[name], sent), name
    values = H.scalars(msg)
    H.pydantic_validate(values)
    # one intra-op thread, as every rank runs: torch.cat of a Scope envelope's 4 MiB on two
    # threads of a shared two-core machine waits for the second one now and then
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {
            "hw_send": _median_us(functools.partial(H.send, header, msg), n),
            "hw_receive": _median_us(functools.partial(H.receive, raw, buf), n),
            "hw_views": _median_us(functools.partial(H.make_views, env.msg, buf), n),
            "pydantic": _median_us(functools.partial(H.pydantic_validate, values), n),
        }
    finally:
        torch.set_num_threads(threads)


def cuda_rows(kinds: tuple[str, ...], n: int) -> list[dict[str, Any]] | None:
    """Device tensors: encode materializes and packs on the GPU, decode views on the GPU.

    None when this machine has no CUDA device (the rows are skipped, not faked)."""
    if not torch.cuda.is_available():
        return None
    rows = []
    dev = torch.device("cuda")
    for name in kinds:
        kind = E.KINDS[name]
        proto = kind.protocol()
        host = kind.message(proto, 0)
        if host is None or proto.__name__.startswith("tpwire_compiled"):
            continue
        header = E.header(proto, 1, 0)
        on_device = dataclasses.replace(
            host,
            **{
                f.name: getattr(host, f.name).to(dev)
                for f in dataclasses.fields(host)
                if isinstance(getattr(host, f.name), torch.Tensor)
            },
        )
        rows.append(_cuda_row(name, proto, header, host, on_device, dev, n))
    return rows


def _cuda_row(
    name: str, proto: Any, header: Any, host: Any, on_device: Any, dev: torch.device, n: int
) -> dict[str, Any]:
    frames = proto.encode(on_device, header)

    def sync(fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            fn()
            torch.cuda.synchronize()

        return run

    return {
        "kind": name,
        "encode_device": _median_us(sync(lambda: proto.encode(on_device, header)), n),
        "encode_from_host": _median_us(sync(lambda: proto.encode(host, header, device=dev)), n),
        "decode_device": _median_us(sync(lambda: proto.decode(frames)), n),
    }
