"""What ``validate``, ``prepare``, ``read_frame0`` and their kin do for every protocol.

A generated module holds its declarations and its unrolled per-field code (validators,
encoders, readers); ``Codec`` holds the same-for-every-protocol steps around them, over the
module's tables. The module's public functions are typed one-line calls into it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch

from . import wire as _w
from .checks import Report, Rule, Stop, TensorsChanged
from .dtypes import CODEC_CONTRACT, REASON_WORDS
from .errors import ContractMismatch, EnvelopeInvalid, Ids, ProtocolMismatch, Violation, WireError
from .wire import Manifest, Prepared

#: One pass over a header or a message, reporting into the ``Report``.
Validator = Callable[[Any, Report], None]
#: What a message's reader makes of frame 0: its class, its values (tensors left out) and
#: the checked layout of frame 1
Read = tuple[type, dict[str, object], _w.Layout]
NO_TENSORS: _w.Layout = ((), (), {})


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("tpwire")
    except Exception:  # not installed (a source tree on sys.path)
        return "from source"


class Reader(NamedTuple):
    message: str
    version: int
    read: Callable[[list[int]], Read]


#: A message's encoder: its frame 0 words, its tensors materialized, the segment plan. The
#: last argument is the tensor signature ``validate`` found (``Report.signature``).
Encoder = Callable[
    [Any, list[int], "torch.device | str | None", "tuple[object, ...] | None"],
    tuple[list[torch.Tensor], tuple[_w.TensorSlot, ...], tuple[int, ...]],
]

_HEADER_TYPE = Rule(
    "type", "header", "Header", rule="header type", message="not this protocol's Header"
)
_MESSAGE_TYPE = Rule(
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
        check_decoded_header: Validator,
        validators: Mapping[type, Validator],
        decoded_validators: Mapping[type, Validator],
        action_message: Mapping[Any, type | tuple[type, ...] | None],
        write_header: Callable[[Any, list[int]], None],
        encoders: Mapping[type, Encoder],
        read_header: Callable[[list[int]], Any],
        readers: Mapping[int, Reader],
        action_ids: Mapping[int, int],
        w_message_id: int,
        w_message_version: int,
        w_reason: int,
        w_frame1: int,
        w_frame1_digest: int,
        error_action: enum.IntEnum,
        contract: int | None = None,
    ) -> None:
        if contract != CODEC_CONTRACT:
            protocol = getattr(header, "__module__", "a generated module")
            made = (
                "a tpwire from before runtime contracts were numbered"
                if contract is None
                else f"runtime contract {contract}"
            )
            raise ContractMismatch(
                f"{protocol} was generated for {made}; this tpwire "
                f"({_version()}) runs contract {CODEC_CONTRACT}: generate it again "
                "(`tpwire gen`), or install the tpwire that generated it"
            )
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
        self.w_reason = w_reason
        self.w_frame1 = w_frame1
        self.w_frame1_digest = w_frame1_digest
        self.error_action = error_action
        self._action_rule = Rule(
            "invariant", f"header.{action_field}", "", rule="the action selects the message"
        )
        self._payload_free_rule = Rule(
            "invariant",
            f"header.{action_field}",
            "a payload action",
            rule="payload-free actions carry no message",
        )

    def validate(self, msg: Any, header: Any, fail_fast: bool) -> list[Violation]:
        return self.check(msg, header, fail_fast).out

    def check(self, msg: Any, header: Any, fail_fast: bool) -> Report:
        """``validate``'s pass, its report kept: the violations and the tensor signature."""
        r = Report(self.ids, header, fail_fast)
        try:
            if header is not None:
                if type(header) is self.header:
                    self.validate_header_fn(header, r)
                    if r.bad:
                        r.bad = set()  # the message's own names follow
                else:
                    r.fail(_HEADER_TYPE, header)
                    header = None
            if msg is not None:
                validator = self.validators.get(type(msg))
                if validator is None:
                    r.fail(_MESSAGE_TYPE, msg)
                else:
                    validator(msg, r)
            action = getattr(header, self.action_field, None) if header is not None else None
            if type(action) is self.action_enum:
                carried = self.action_message.get(action)
                if carried is None and msg is not None:
                    r.add(self._payload_free_rule, action.name)
                elif carried is not None and not isinstance(msg, carried):
                    r.add(self._action_rule, _w.show(msg), _w.class_names(carried))
        except Stop:
            pass
        return r

    def validate_header(self, header: Any, fail_fast: bool) -> list[Violation]:
        r = Report(self.ids, header, fail_fast)
        try:
            if type(header) is not self.header:
                r.fail(_HEADER_TYPE, header)
            else:
                self.validate_header_fn(header, r)
        except Stop:
            pass
        return r.out

    def prepare(self, msg: Any, header: Any, device: torch.device | str | None) -> Prepared:
        if header is None:
            raise EnvelopeInvalid(self.validate_header(header, False))
        report = self.check(msg, header, False)
        if report.out:
            raise EnvelopeInvalid(report.out)
        words = [0] * self.frame0_len
        words[0] = _w.MAGIC_WORD
        words[1] = self.fingerprint
        self.write_header(header, words)
        if msg is None:
            return Prepared(words, (), (), ())
        try:
            tensors, slots, sizes = self.encoders[type(msg)](msg, words, device, report.signature)
        except TensorsChanged as exc:
            raise EnvelopeInvalid(exc.violations(self.ids(header))) from None
        words[self.w_frame1] = sum(sizes)
        words[self.w_frame1_digest] = _w.frame1_digest(tensors, slots, sizes)
        return Prepared(words, tensors, slots, sizes)

    def decoded_validator(self, dims: dict[str, int]) -> Callable[[Any, Any], list[Violation]]:
        """``validate`` of an envelope the decoder built: it fixed every type, dtype and
        shape (binding ``dims``) and matched the message to the action, so ranges, presence
        rules, derived fields and invariants remain."""

        def check(msg: Any, header: Any) -> list[Violation]:
            r = Report(self.ids, header, False, dims)
            self.check_decoded_header(header, r)
            if msg is not None:
                if r.bad:
                    r.bad = set()
                self.decoded_validators[type(msg)](msg, r)
            return r.out

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
            reason = None
            if action is self.error_action:  # the only frame that may carry a reason
                _w.require_zero(words, self.w_message_version, self.w_reason)
                reason = _w.read_reason(words, self.w_reason)
                _w.require_zero(words, self.w_reason + REASON_WORDS, self.w_frame1_digest + 1)
            else:
                _w.require_zero(words, self.w_message_version, self.w_frame1_digest + 1)
            return Manifest(header, None, {}, (), (), self.decoded_validator({}), reason=reason)
        reader = self.readers[mid]
        version = words[self.w_message_version]
        if version != reader.version:
            raise ProtocolMismatch(
                "message-version",
                f"{reader.message} v{version} from the peer, this side speaks v{reader.version}",
                self.w_message_version,
            )
        _w.require_zero(words, self.w_reason, self.w_reason + REASON_WORDS)
        cls, values, (slots, sizes, dims) = reader.read(words)
        nbytes, digest = words[self.w_frame1], words[self.w_frame1_digest]
        if nbytes != sum(sizes):
            raise WireError(
                "frame1",
                f"frame 1 announced {nbytes} bytes, the manifest needs {sum(sizes)}",
                self.w_frame1,
            )
        if not nbytes and digest:
            raise WireError(
                "frame1",
                f"an empty frame 1 has digest 0, frame says {digest:#x}",
                self.w_frame1_digest,
            )
        return Manifest(header, cls, values, slots, sizes, self.decoded_validator(dims), digest)
