"""Stage 2 - check: structure against the shipped meta-schema, then meaning.

Every problem becomes a located ``SpecError``; all of them are collected and raised
together, sorted by position. Nothing here raises anything else for any input tree.

This module is the stage's entry: ``check``, the meta-schema and its errors, and the limits
(re-exported from ``codegen/check_context.py``). The checks themselves are plain functions
of a shared ``Context``, one module per part of a spec: ``check_enums``, ``check_header``,
``check_messages``, ``check_fields`` (types and field rule kinds, ``codegen/field_rules.py``),
``check_exprs``, ``check_cached``, ``check_names``. Error codes: ``codegen/codes.py``.
Where a new check goes: docs/architecture.md, "How to add a check and its error code".
"""

from __future__ import annotations

import copy
import dataclasses
import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from . import codes
from .check_context import (
    INT64_MAX,
    INT64_MIN,
    MAX_FIELDS,
    MAX_HEADER_FIELDS,
    MAX_RANK,
    MAX_STR_LEN,
    SPEC_LANGUAGE_VERSION,
    WIRE_DTYPE_NAMES,
    Context,
    describe,
    did_you_mean,
)
from .check_enums import check_enums
from .check_header import check_control, check_header
from .check_messages import check_messages
from .check_names import GeneratedNames, check_names, generated_names
from .errors import SpecError, SpecErrors
from .field_rules import schema_fragments
from .load import LoadedSpec, PathKey
from .model import CheckedSpec

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_FIELDS",
    "MAX_HEADER_FIELDS",
    "MAX_RANK",
    "MAX_STR_LEN",
    "SPEC_LANGUAGE_VERSION",
    "WIRE_DTYPE_NAMES",
    "GeneratedNames",
    "check",
    "check_with",
    "generated_names",
    "meta_errors",
    "meta_schema",
]


@cache
def _shipped_meta_schema() -> dict[str, Any]:
    text = resources.files("tpwire.codegen").joinpath("meta_schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _extended_meta_schema(fragments: str) -> dict[str, Any]:
    schema = copy.deepcopy(_shipped_meta_schema())
    properties = schema["$defs"]["field"]["properties"]
    for key, fragment in json.loads(fragments):
        properties[key] = fragment
    return schema


def meta_schema() -> dict[str, Any]:
    """codegen/meta_schema.json, with the value schema of every field rule kind registered
    in codegen/field_rules.py that it does not spell itself."""
    fragments = schema_fragments()
    if not fragments:
        return _shipped_meta_schema()
    return _extended_meta_schema(json.dumps([[k, dict(s)] for k, s in fragments], sort_keys=True))


def meta_errors(loaded: LoadedSpec) -> list[SpecError]:
    """Structural errors from the meta-schema, located at the offending key or value."""
    validator = jsonschema.Draft202012Validator(meta_schema())
    out: list[SpecError] = []
    for err in validator.iter_errors(loaded.data):
        path: PathKey = tuple(err.absolute_path)
        where = describe(path)
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            allowed = set(err.schema.get("properties", {}))
            if allowed:
                for key in sorted(set(err.instance) - allowed):
                    hint = did_you_mean(key, allowed)
                    out.append(
                        loaded.error(
                            (*path, key),
                            codes.UNKNOWN_KEY.name,
                            f"unknown key {key!r} in {where}{hint}",
                            key=True,
                        )
                    )
                continue
        out.append(_meta_error(loaded, err, path, where))
    return out


def _meta_error(
    loaded: LoadedSpec, err: jsonschema.ValidationError, path: PathKey, where: str
) -> SpecError:
    if err.validator == "required":
        return loaded.error(path, codes.MISSING_KEY.name, f"{where}: {err.message}", key=True)
    if "propertyNames" in err.absolute_schema_path:
        bad = err.instance
        return loaded.error(
            (*path, bad) if isinstance(bad, str) else path,
            codes.BAD_NAME.name,
            f"bad name {bad!r} in {where}: {err.message}",
            key=True,
        )
    if err.validator == "pattern" and len(path) and err.parent is None:
        return loaded.error(path, codes.BAD_NAME.name, f"{where}: {err.message}")
    return loaded.error(path, codes.SCHEMA.name, f"{where}: {err.message}")


def _run(ctx: Context) -> CheckedSpec | None:
    version = ctx.data["tpwire"]
    if version != SPEC_LANGUAGE_VERSION:
        ctx.fail(
            ("tpwire",),
            codes.UNSUPPORTED_VERSION,
            f"spec language version {version!r} is not supported (this tpwire reads {SPEC_LANGUAGE_VERSION})",
        )
    enums = check_enums(ctx)
    header = check_header(ctx)
    action_enum = None
    if header is not None:
        action_field = next((f for f in header.fields if f.name == header.action), None)
        if action_field is not None and action_field.type.enum in ctx.enums:
            action_enum = ctx.enums[action_field.type.enum]
    messages, actions = check_messages(ctx, action_enum)
    check_names(ctx, messages)
    if header is None:
        return None
    control = check_control(ctx, ctx.data["header"]["control"], action_enum, actions)
    return CheckedSpec(
        file=ctx.spec.file,
        sha256=ctx.spec.sha256,
        protocol=ctx.data["protocol"],
        doc=ctx.data.get("doc", ""),
        enums=enums,
        header=dataclasses.replace(header, control=control),
        messages=tuple(messages),
    )


def check_with(
    loaded: LoadedSpec, names: GeneratedNames | None, *, stream_rules: bool = True
) -> CheckedSpec:
    """``check`` against the given generated-module names (None: leave those clashes out,
    as codegen/reserved_probe.py does while it derives them)."""
    errors = meta_errors(loaded)
    if errors:
        raise SpecErrors(errors)
    ctx = Context(loaded, names, stream_rules=stream_rules)
    try:
        spec = _run(ctx)
    except (RecursionError, MemoryError):
        raise SpecErrors(
            [loaded.error((), codes.TOO_LARGE.name, "spec is too complex to check")]
        ) from None
    if ctx.errors or spec is None:
        raise SpecErrors(ctx.errors)
    return spec


def check(loaded: LoadedSpec, *, stream_rules: bool = True) -> CheckedSpec:
    """Run every check; raise ``SpecErrors`` with all problems found.

    ``stream_rules=False`` leaves out the rules on what can carry a stream that a spec
    compiled without before (a rule reading a cached field, a cached field with
    ``forbidden_when``, a derived sequence role): ``breaking``'s old side, a spec that old
    peers ran, only has to compile."""
    return check_with(loaded, generated_names(), stream_rules=stream_rules)
