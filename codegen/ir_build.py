"""Stage 3 entry: a checked spec to its :class:`~.ir.ProtocolIR`.

Each field's constraint record is built here, once (``codegen/constraints.py``), and
shared by the fingerprint and the field IR; the frame 0 layout (docs/wire-format.md) is
fixed by the widest message; the header and messages are built by ``codegen/ir_messages.py``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tpwire.runtime.dtypes import REASON_WORDS, WIRE_VERSION

from .constraints import INT64_MAX, FieldConstraints, constraints_of
from .ir import FIXED_WORDS, ActionIR, EnumIR, LayoutIR, ProtocolIR
from .ir_fields import scalar_width
from .ir_messages import Records, header_ir, message_ir
from .model import CField, CheckedSpec


def records_of(spec: CheckedSpec) -> dict[tuple[str | None, str], FieldConstraints]:
    """Every field's constraint record, by (message name, field name); the header's
    fields by (None, name)."""
    enums = {e.name: e.members for e in spec.enums}
    out: dict[tuple[str | None, str], FieldConstraints] = {
        (None, f.name): constraints_of(f, {}, enums) for f in spec.header.fields
    }
    for m in spec.messages:
        dims = {d.name: (d.min, d.max) for d in m.dims}
        out.update({(m.name, f.name): constraints_of(f, dims, enums) for f in m.fields})
    return out


def _canonical_field(f: CField, c: FieldConstraints) -> dict[str, Any]:
    # a cached field's epoch and a registered rule kind are wire-relevant; their keys exist
    # only where one is declared, so the fingerprints of specs without them stay the same.
    # Registered kinds go by key, not registration order: peers that register the same
    # kinds in another order (their imports differ) still agree on the fingerprint.
    cached = {"cached_by": f.cached_by} if f.cached_by is not None else {}
    pairs = sorted(c.extra, key=lambda kv: kv[0])
    extra = {"extra": [[k, v] for k, v in pairs]} if pairs else {}
    return {
        **cached,
        **extra,
        "name": f.name,
        "type": str(f.type),
        "always": f.always_required,
        "range": [f.range_min, f.range_max],
        "max_len": f.max_len,
        "dtypes": list(f.dtypes),
        "shape": list(f.shape),
        "max_elements": f.max_elements,
        "rules": {
            k: (ce.text if ce is not None else None)
            for k, ce in (
                ("required_when", f.required_when),
                ("forbidden_when", f.forbidden_when),
                ("none_unless", f.none_unless),
                ("derived", f.derived),
            )
        },
    }


def canonical(spec: CheckedSpec, records: Records) -> str:
    """Wire-relevant content only: docs may change without breaking peers."""
    h = spec.header
    doc = {
        "wire_version": WIRE_VERSION,
        "protocol": spec.protocol,
        "enums": [[e.name, [list(m) for m in e.members]] for e in spec.enums],
        "header": {
            "slots": list(h.slots),
            "action": h.action,
            "roles": [list(r) for r in h.roles],
            "control": [list(c) for c in h.control],
            "fields": [_canonical_field(f, records[None, f.name]) for f in h.fields],
        },
        "messages": [
            {
                "name": m.name,
                "id": m.id,
                "version": m.version,
                "action": m.action,
                "discriminator": m.discriminator,
                "version_field": m.version_field,
                "dims": [[d.name, d.min, d.max] for d in m.dims],
                "fields": [_canonical_field(f, records[m.name, f.name]) for f in m.fields],
                "invariants": [[i.id, i.expr.text] for i in m.invariants],
            }
            for m in spec.messages
        ],
    }
    # a registered kind's value that JSON has no form for is fingerprinted by its repr
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), default=repr)


def layout_of(spec: CheckedSpec) -> LayoutIR:
    """Frame 0's words: the fixed words, the header, the message id, version and presence,
    then scalar and manifest areas as wide as the widest message needs, then an ERROR
    frame's reason, then frame 1's length, digest and checksum (docs/wire-format.md)."""
    w_hpres = FIXED_WORDS + len(spec.header.fields)
    scalar_base = w_hpres + 4
    nscalar = max(
        (sum(scalar_width(f) for f in m.fields if f.type.kind != "tensor") for m in spec.messages),
        default=0,
    )
    manifest_base = scalar_base + nscalar
    nmanifest = max(
        (sum(1 + len(f.shape) for f in m.fields if f.type.kind == "tensor") for m in spec.messages),
        default=0,
    )
    w_reason = manifest_base + nmanifest
    w_frame1 = w_reason + REASON_WORDS
    return LayoutIR(
        header=FIXED_WORDS,
        header_presence=w_hpres,
        message_id=w_hpres + 1,
        message_version=w_hpres + 2,
        presence=w_hpres + 3,
        scalars=scalar_base,
        manifest=manifest_base,
        reason=w_reason,
        frame1=w_frame1,
        frame1_digest=w_frame1 + 1,
        checksum=w_frame1 + 2,
        length=w_frame1 + 3,
    )


def build_protocol(spec: CheckedSpec, source: str | None = None) -> ProtocolIR:
    """``codegen.ir.build``: the IR of ``spec``, shown as coming from ``source``."""
    enums = {e.name: dict(e.members) for e in spec.enums}
    records = records_of(spec)
    text = canonical(spec, records)
    digest = hashlib.sha256(text.encode()).digest()
    layout = layout_of(spec)
    header = header_ir(spec.header, records)
    messages = tuple(message_ir(m, records, layout, enums) for m in spec.messages)
    by_action = {m.action: m for m in messages}
    return ProtocolIR(
        name=spec.protocol,
        module=spec.protocol,
        doc=spec.doc,
        source=source or spec.file,
        sha256=spec.sha256,
        fingerprint=int.from_bytes(digest[:8], "big") & INT64_MAX,
        canonical=text,
        enums=tuple(EnumIR(e.name, e.doc, e.members) for e in spec.enums),
        header=header,
        messages=messages,
        actions=tuple(
            ActionIR(member, value, by_action.get(member))
            for member, value in enums[header.action_enum].items()
        ),
        layout=layout,
    )
