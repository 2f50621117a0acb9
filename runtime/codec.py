"""What ``validate``, ``prepare``, ``read_frame0`` and their kin do for every protocol.

A generated module holds its declarations and its unrolled per-field code (validators,
encoders, readers); ``Codec`` holds the same-for-every-protocol steps around them, over the
module's tables. The module's public functions are typed one-line calls into it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any

import torch

from . import wire as _w
from .errors import EnvelopeInvalid, Ids, Violation, WireError
from .wire import Manifest, Prepared

Validator = Callable[[Any, list[Violation], Ids, bool], None]
DecodedValidator = Callable[[Any, list[Violation], Ids, bool, dict[str, int]], None]
Encoder = Callable[
    [Any, list[int], "torch.device | str | None"], tuple[list[torch.Tensor], list[_w.Entry]]
]

_HEADER_TYPE = _w.Rule(
    "type", "header", "Header", rule="header type", message="not this protocol's Header"
)
_MESSAGE_TYPE = _w.Rule(
    "type",
    "message",
    "one of MESSAGES",
    rule="message type",
    message="not a message of this protocol",
)


class Codec:
    """One protocol's tables, and the steps every protocol's codec shares."""

    def __init__(
        self,
        *,
        header: type,
        action_field: str,
        action_enum: type[enum.IntEnum],
        fingerprint: int,
        frame0_len: int,
        ids: Callable[[Any], Ids],
        validate_header: Validator,
        check_decoded_header: Callable[[Any, list[Violation], Ids, bool], None],
        validators: Mapping[type, Validator],
        decoded_validators: Mapping[type, DecodedValidator],
        action_message: Mapping[Any, type | tuple[type, ...] | None],
        write_header: Callable[[Any, list[int]], None],
        encoders: Mapping[type, Encoder],
        read_header: Callable[[list[int]], Any],
        readers: Mapping[int, Callable[[list[int], Any], Manifest]],
        action_ids: Mapping[int, int],
        w_message_id: int,
        w_message_version: int,
        w_frame1: int,
        w_frame1_digest: int,
    ) -> None:
        self.header = header
        self.action_field = action_field
        self.action_enum = action_enum
        self.fingerprint = fingerprint
        self.frame0_len = frame0_len
        self.ids = ids
        self.validate_header_fn = validate_header
        self.check_decoded_header = check_decoded_header
        self.validators = validators
        self.decoded_validators = decoded_validators
        self.action_message = action_message
        self.write_header = write_header
        self.encoders = encoders
        self.read_header = read_header
        self.readers = readers
        self.action_ids = action_ids
        self.w_message_id = w_message_id
        self.w_message_version = w_message_version
        self.w_frame1 = w_frame1
        self.w_frame1_digest = w_frame1_digest
        self._action_rule = _w.Rule(
            "invariant", f"header.{action_field}", "", rule="the action selects the message"
        )
        self._payload_free_rule = _w.Rule(
            "invariant",
            f"header.{action_field}",
            "a payload action",
            rule="payload-free actions carry no message",
        )

    def validate(self, msg: Any, header: Any, fail_fast: bool) -> list[Violation]:
        out: list[Violation] = []
        ids = self.ids(header)
        try:
            if header is not None:
                if type(header) is self.header:
                    self.validate_header_fn(header, out, ids, fail_fast)
                else:
                    _w.fail(out, fail_fast, ids, _HEADER_TYPE, _w.show(header))
                    header = None
            if msg is not None:
                validator = self.validators.get(type(msg))
                if validator is None:
                    _w.fail(out, fail_fast, ids, _MESSAGE_TYPE, _w.show(msg))
                else:
                    validator(msg, out, ids, fail_fast)
            action = getattr(header, self.action_field, None) if header is not None else None
            if type(action) is self.action_enum:
                carried = self.action_message.get(action)
                if carried is None and msg is not None:
                    _w.fail(out, fail_fast, ids, self._payload_free_rule, action.name)
                elif carried is not None and not isinstance(msg, carried):
                    _w.fail(
                        out,
                        fail_fast,
                        ids,
                        self._action_rule,
                        _w.show(msg),
                        _w.class_names(carried),
                    )
        except _w.Stop:
            pass
        return out

    def validate_header(self, header: Any, fail_fast: bool) -> list[Violation]:
        out: list[Violation] = []
        if type(header) is not self.header:
            _w.fail(out, False, (), _HEADER_TYPE, _w.show(header))
            return out
        try:
            self.validate_header_fn(header, out, self.ids(header), fail_fast)
        except _w.Stop:
            pass
        return out

    def prepare(self, msg: Any, header: Any, device: torch.device | str | None) -> Prepared:
        violations = (
            self.validate(msg, header, False)
            if header is not None
            else self.validate_header(header, False)
        )
        if violations:
            raise EnvelopeInvalid(violations)
        words = [0] * self.frame0_len
        words[0] = _w.MAGIC_WORD
        words[1] = self.fingerprint
        self.write_header(header, words)
        if msg is None:
            return Prepared(words, (), (), ())
        tensors, entries = self.encoders[type(msg)](msg, words, device)
        slots, sizes = _w.plan_segments(entries)
        words[self.w_frame1] = sum(sizes)
        words[self.w_frame1_digest] = _w.frame1_digest(tensors, slots, sizes)
        return Prepared(words, tensors, slots, sizes)

    def decoded_validator(self, dims: dict[str, int]) -> Callable[[Any, Any], list[Violation]]:
        """``validate`` of an envelope the decoder built: it fixed every type, dtype and
        shape (binding ``dims``) and matched the message to the action, so ranges, presence
        rules, derived fields and invariants remain."""

        def check(msg: Any, header: Any) -> list[Violation]:
            out: list[Violation] = []
            ids = self.ids(header)
            self.check_decoded_header(header, out, ids, False)
            if msg is not None:
                self.decoded_validators[type(msg)](msg, out, ids, False, dims)
            return out

        return check

    def read_words(self, words: list[int]) -> Manifest:
        header = self.read_header(words)
        mid = words[self.w_message_id]
        action = getattr(header, self.action_field)
        expected = self.action_ids[int(action)]
        if mid != expected:
            raise WireError(
                "message-id",
                f"action {action.name} carries message id {expected}, frame says {mid}",
                self.w_message_id,
            )
        if mid == 0:
            _w.require_zero(words, self.w_message_version, self.w_frame1_digest + 1)
            return Manifest(header, None, {}, (), (), self.decoded_validator({}))
        return self.readers[mid](words, header)
