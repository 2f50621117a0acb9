"""The registry of field rule kinds: the keys of a field body that bound its values.

A field body (``{type: int, range: {min: 0}}``) is checked key by key: each rule kind
(``range``, ``max_len``, ``dtypes``, ``shape``, ``max_elements``...) is one ``FieldRule``
registered here, with the field kinds it applies to, the meta-schema fragment its value
must match, and the function that checks it. ``codegen/check_fields.py`` registers the
built-in kinds and dispatches through ``field_rules()``; the meta-schema the checker
validates against is ``codegen/meta_schema.json`` with every registered fragment added
under ``$defs.field.properties`` (docs/spec-language.md, "Fields", lists the keys).
A new rule kind end to end: docs/architecture.md, "How to add a rule kind".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Protocol

import jsonschema

from .codes import Code
from .load import PathKey
from .model import CDim, TypeRef

#: The kinds a field can have (``TypeRef.kind``).
FIELD_KINDS = ("int", "float", "bool", "str", "tensor", "enum")
#: Field keys that are no rule kind: ``codegen/check_fields.py`` reads them itself (the
#: type, prose, presence conditions, the derived expression, the cache epoch).
SPEC_KEYS = frozenset(
    {"type", "doc", "why", "check", "fm", "derived"}
    | {"required_when", "forbidden_when", "none_unless", "cached_by"}
)


@cache
def shipped_field_keys() -> frozenset[str]:
    """The field keys codegen/meta_schema.json spells itself (``$defs.field.properties``)."""
    text = resources.files("tpwire.codegen").joinpath("meta_schema.json").read_text("utf-8")
    return frozenset(json.loads(text)["$defs"]["field"]["properties"])


class Fail(Protocol):
    """How a check reports a problem (``codegen.check_context.Context.fail``)."""

    def __call__(
        self,
        path: PathKey,
        code: Code,
        message: str,
        *,
        key: bool = False,
        offset: int | None = None,
    ) -> None: ...


@dataclass(frozen=True)
class FieldInput:
    """What a rule's check sees of one field."""

    name: str
    path: PathKey  # the field's own path (``("messages", "Infer", "fields", "height")``)
    body: Mapping[str, Any]  # the field body as written
    type: TypeRef
    dims: Mapping[str, CDim]  # the message's dimensions (none in the header)
    fail: Fail

    @property
    def kind(self) -> str:
        return self.type.kind

    def error(self, key: str, code: Code, message: str, *, key_error: bool = False) -> None:
        """Report a problem at this field's ``key`` (at the key itself when ``key_error``)."""
        self.fail((*self.path, key), code, message, key=key_error)


#: A rule's check: reports through ``FieldInput.fail`` / ``FieldInput.error`` and returns
#: the ``CField`` attributes it decides (``{"range_min": 0, "range_max": 10}``); they must
#: be fields of ``codegen.model.CField`` (a ``TypeError`` otherwise). A kind without an
#: attribute of its own returns ``{"extra": ((key, value),)}``: the pairs of every kind a
#: field uses are joined in registration order (``codegen/constraints.py`` reads them).
FieldCheck = Callable[[FieldInput], Mapping[str, Any]]


@dataclass(frozen=True)
class FieldRule:
    key: str
    #: the field kinds the key applies to; on any other kind it is ``bad-key``
    kinds: tuple[str, ...]
    #: the JSON Schema (draft 2020-12) of the key's value, added to the meta-schema's field
    #: properties; None where codegen/meta_schema.json spells it already
    schema: Mapping[str, Any] | None
    check: FieldCheck
    #: run the check on every field of ``kinds``, the key present or not (``max_len`` of a
    #: str, ``dtypes`` and ``shape`` of a tensor are required: their checks say so)
    always: bool = False


_RULES: dict[str, FieldRule] = {}


def register_field_rule(
    key: str,
    kinds: tuple[str, ...],
    schema: Mapping[str, Any] | None,
    check: FieldCheck,
    *,
    always: bool = False,
) -> FieldRule:
    """Add a rule kind: ``key`` in a field body of one of ``kinds`` is checked by ``check``.

    Raises ``ValueError`` for a key registered already, an unknown kind, a key that is no
    rule kind (``SPEC_KEYS``), a ``schema`` for a key the meta-schema spells already (it
    would replace that key's schema on every field) and no ``schema`` for a key it lacks
    (the key would be refused as ``unknown-key``)."""
    if key in _RULES:
        raise ValueError(f"field rule {key!r} is registered already")
    unknown = [k for k in kinds if k not in FIELD_KINDS]
    if unknown or not kinds:
        raise ValueError(f"field rule {key!r}: kinds must be among {FIELD_KINDS}, got {kinds}")
    if key in SPEC_KEYS:
        raise ValueError(f"{key!r} is a field key the checker reads itself, not a rule kind")
    spelled = key in shipped_field_keys()
    if spelled and schema is not None:
        raise ValueError(f"codegen/meta_schema.json spells {key!r} already: pass schema=None")
    if not spelled and schema is None:
        raise ValueError(f"field rule {key!r} needs the schema of its value")
    if schema is not None:
        # refused now, not by every later check of a spec that uses the key
        try:
            json.dumps(schema)
            jsonschema.Draft202012Validator.check_schema(schema)
        except (TypeError, ValueError, jsonschema.SchemaError) as exc:
            why = getattr(exc, "message", exc)
            raise ValueError(
                f"field rule {key!r}: its value schema is no JSON Schema: {why}"
            ) from None
    rule = FieldRule(key, tuple(kinds), schema, check, always)
    _RULES[key] = rule
    return rule


def _built_in(check: Callable[..., object]) -> bool:
    """A check the compiler ships: defined in a module of this package (``tpwire.codegen``),
    where ``codegen/check_fields.py`` registers the built-in kinds."""
    return str(getattr(check, "__module__", "")).startswith(f"{__package__}.")


def unregister_field_rule(key: str) -> None:
    """Remove a rule kind a caller registered (a test's toy rule, after the test); a no-op
    when ``key`` is not registered. A built-in kind raises ``ValueError``: registered again
    it would come last, and the checks, ``CField.extra`` and the meta-schema follow
    registration order."""
    rule = _RULES.get(key)
    if rule is not None and _built_in(rule.check):
        raise ValueError(f"field rule {key!r} is built in; only a registered kind is removed")
    _RULES.pop(key, None)


def field_rules() -> tuple[FieldRule, ...]:
    """Every registered rule kind, in registration order."""
    return tuple(_RULES.values())


def schema_fragments() -> tuple[tuple[str, Mapping[str, Any]], ...]:
    """(key, schema) of every rule kind whose value schema the meta-schema lacks."""
    return tuple((r.key, r.schema) for r in _RULES.values() if r.schema is not None)
