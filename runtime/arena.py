"""Copy-free sends: the source builds an envelope's tensors in the channel's send buffer.

A channel opened with ``arena=True`` carries every segment of its agreed layout in the head
collective (no carry limit, on a CPU channel too). ``alloc(field, shape, dtype)`` then hands
out a view of the place that field's tensor takes in the next head, when the agreed layout
has one for that field, dtype and shape; the caller writes the tensor there and sends a
message holding that very view. The source then copies nothing for it: a steady-state
envelope whose tensors were all made by ``alloc`` is one collective and no host copy.

Everything else falls back, never wrong: a field the agreed layout does not place (no agreed
layout yet, another shape or dtype) gets an ordinary new tensor, sent the usual way; a view
that is not at its place in the envelope actually sent (the envelope took another layout:
a recompute chunk's context frames move the latents) is copied out of the head before
anything is written into it.

``alloc`` holds the dtype and shape it is asked for to the field's spec before anything is
allocated (``AllocRefused``, naming the field, what the spec allows and what was asked): a
dtype the field does not take, a rank, fixed dimension or range the pattern does not have, a
dimension that is not an ``int`` (``64.9``, ``True``) or not an ``int64``, more elements
than the field's bound, more dimensions than any of the field's patterns (by length alone).
What binds one tensor to another (a symbol two fields share) is ``validate``'s, at ``send``.

A view is valid until the next payload ``send`` (whether it used the view or not): the
buffer is reused for the next envelope, so a message holding a view from before the last
send is refused with ``ArenaError`` before any collective, as is a tensor made from a view
(a slice, a reshape) rather than the view itself. A refused envelope (``EnvelopeInvalid``,
an ordering error, ``ArenaError``) sends nothing and leaves the views valid.
"""

from __future__ import annotations

import operator
import sys
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from .checks import TensorField, TensorGroup
from .wire import DTYPE_BY_TORCH, Prepared, TensorSlot, _static_shape, dtype_name

if TYPE_CHECKING:
    from .bindings import Bindings


class ArenaError(RuntimeError):
    """The send arena was misused (a stale view, an unknown field): raised before frame 0."""


class AllocRefused(ArenaError):
    """``alloc`` was asked for a dtype or shape its field's spec does not allow: raised
    before anything is allocated. ``code`` is ``dtype`` or ``shape``."""

    def __init__(self, field: str, code: str, expected: str, actual: str) -> None:
        self.field = field
        self.code = code
        self.expected = expected
        self.actual = actual
        shown = actual if len(actual) <= 200 else f"{actual[:200]}..."
        super().__init__(f"alloc of {field!r}: {code} {shown}; expected {expected}")


def tensor_specs(bindings: Bindings[Any, Any]) -> dict[str, tuple[TensorField, ...]]:
    """Each tensor field of a protocol's messages, by name, with its spec (``TensorField``:
    dtypes, shape pattern, element bound) as the generated module declares it; a name two
    messages share has the spec of each."""
    names = {
        name
        for cls in bindings.messages.values()
        for variant in bindings.variants.get(cls, (cls,))
        for name in getattr(variant, "__dataclass_fields__", {})
    }
    specs: dict[str, list[TensorField]] = {}
    modules = {cls.__module__ for cls in bindings.messages.values()}
    for module in sorted(modules):
        found = vars(sys.modules[module]).values() if module in sys.modules else ()
        for group in found:
            if isinstance(group, TensorGroup):
                for f in group.fields:
                    known = specs.setdefault(f.name, [])
                    if f.name in names and all(f is not k for k in known):
                        known.append(f)
    return {name: tuple(fs) for name, fs in specs.items() if fs}


#: a dimension torch can hold (``int64``): anything past it is refused by its size alone
_DIM_MIN, _DIM_MAX = -(2**63), 2**63 - 1


def _dims(field: str, shape: object, specs: Sequence[TensorField]) -> tuple[int, ...]:
    """``shape`` as ints: a sequence of integers (an ``int``, or what ``__index__`` makes
    one of), never a float, bool (a bool tensor either) or string, each within ``int64``,
    and no more of them than the field's patterns have (a longer sequence is refused by its
    length, before its entries are read: ``range(10**12)`` is one line, at once)."""
    if isinstance(shape, str | bytes) or not isinstance(shape, Sequence):
        raise AllocRefused(field, "shape", "a sequence of ints", f"of type {type(shape).__name__}")
    try:
        n = len(shape)
    except (OverflowError, ValueError):  # a range past sys.maxsize
        n = -1
    most = max(len(f.shape) for f in specs)
    if not 0 <= n <= most:
        shown = f"rank {n}" if n >= 0 else "a rank past sys.maxsize"
        expected = " or ".join(f.shape_rule.expected for f in specs)
        raise AllocRefused(field, "shape", expected, f"{shown} (at most {most})")
    dims = []
    for i, d in enumerate(shape):
        try:
            if isinstance(d, bool) or (isinstance(d, torch.Tensor) and d.dtype is torch.bool):
                raise TypeError
            dim = operator.index(d)
        except Exception:  # a float (64.9 is no dimension), a bool, anything else
            shown = repr(d) if isinstance(d, bool | float) else "a value"
            raise AllocRefused(
                field, "shape", "a sequence of ints",
                f"dim {i} is {shown[:40]} ({type(d).__name__})",
            ) from None  # fmt: skip
        if not _DIM_MIN <= dim <= _DIM_MAX:  # its digits alone could exceed str()'s limit
            raise AllocRefused(
                field, "shape", "a sequence of ints within int64",
                f"dim {i} is an int of {dim.bit_length()} bits",
            )  # fmt: skip
        dims.append(dim)
    return tuple(dims)


class ArenaStats:
    """What the arena did, counted since the channel opened."""

    __slots__ = ("fresh", "in_place", "moved", "views")

    def __init__(self) -> None:
        #: ``alloc`` calls answered with a view of the next head
        self.views = 0
        #: ``alloc`` calls answered with an ordinary tensor (nowhere to place it yet)
        self.fresh = 0
        #: views sent from their place, no byte copied
        self.in_place = 0
        #: views copied out first: the envelope sent had another layout
        self.moved = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __repr__(self) -> str:
        return f"ArenaStats({', '.join(f'{k}={v}' for k, v in self.as_dict().items())})"


class Arena:
    """The source's views into its next head buffer (one per channel direction)."""

    def __init__(self, specs: Mapping[str, tuple[TensorField, ...]]) -> None:
        #: the protocol's tensor fields, with the spec of each (``tensor_specs``)
        self.specs = specs
        self.fields = frozenset(specs)
        #: the views handed out since the last payload send, by field
        self.live: dict[str, torch.Tensor] = {}
        #: every view still alive that was ever handed out (stale ones too), by id
        self.handed: weakref.WeakValueDictionary[int, torch.Tensor] = weakref.WeakValueDictionary()
        #: the slots of the agreed layout (an envelope that has it), None before one
        self.layout: tuple[TensorSlot, ...] | None = None
        self.stats = ArenaStats()

    def check(self, field: str, shape: object, dtype: object) -> tuple[int, ...]:
        """``shape`` as ints, once ``field`` is a tensor field whose spec allows ``dtype``
        and ``shape`` (``ArenaError``, ``AllocRefused`` otherwise): what ``alloc`` asks
        before it allocates anything."""
        # the field as the caller gave it (a long string cut, anything else by its type)
        name = repr(field)[:80] if isinstance(field, str) else type(field).__name__
        wd = DTYPE_BY_TORCH.get(dtype) if isinstance(dtype, torch.dtype) else None
        if wd is None:
            shown = dtype if isinstance(dtype, torch.dtype) else type(dtype).__name__
            raise ArenaError(f"alloc of {name}: the wire carries no {shown}")
        specs = self.specs.get(field) if isinstance(field, str) else None
        if not specs:
            raise ArenaError(f"alloc of {name}: not a tensor field of this protocol")
        dims = _dims(field, shape, specs)
        fits = [f for f in specs if dtype in f.dtypes]
        if not fits:
            raise AllocRefused(
                field, "dtype", " or ".join(f.dtype_rule.expected for f in specs),
                dtype_name(dtype),
            )  # fmt: skip
        problems = []
        for f in fits:
            _, problem, _ = _static_shape(dims, f.shape, f.limit)
            if problem is None:
                return dims
            problems.append(problem)
        raise AllocRefused(
            field, "shape", " or ".join(f.shape_rule.expected for f in fits), problems[0]
        )

    def place(
        self, field: str, shape: tuple[int, ...], dtype: torch.dtype, carried: Sequence[bool]
    ) -> TensorSlot | None:
        """The slot of the agreed layout this tensor would take, if the head carries it
        (``shape`` and ``dtype`` as ``check`` passed them)."""
        wd = DTYPE_BY_TORCH[dtype]
        for slot in self.layout or ():
            if slot.field == field:
                if slot.dtype is wd and slot.shape == shape and carried[slot.segment]:
                    return slot
                return None
        return None

    def view(self, field: str, buf: torch.Tensor, at: int, slot: TensorSlot) -> torch.Tensor:
        """A new view of ``slot`` at byte ``at`` of ``buf``, valid until the next send."""
        raw = buf[at : at + slot.nbytes]
        view = raw.view(slot.dtype.torch_dtype).view(slot.shape)
        self.live[field] = view
        self.handed[id(view)] = view
        self.stats.views += 1
        return view

    def settle(
        self, prepared: Prepared, buf: torch.Tensor, offsets: Sequence[int], carried: Sequence[bool]
    ) -> Prepared:
        """``prepared`` ready to be laid into ``buf``: its views checked (``ArenaError`` for a
        stale one or a tensor made from one), those not at their place in this envelope
        copied out of the head first (bytes may be written over them). Runs before frame 0."""
        # a tensor's bytes inside the buffer that are not a live view at its place would be
        # written over: found by address, whatever object or storage holds them (a view
        # spent and collected, a dlpack alias), on the buffer's device
        start = buf.data_ptr()
        end = start + buf.numel()
        handed = self.handed
        moved: dict[int, torch.Tensor] = {}
        in_place = 0
        for i, (t, slot) in enumerate(zip(prepared.tensors, prepared.slots, strict=True)):
            if handed and handed.get(id(t)) is t:
                if self.live.get(slot.field) is not t:
                    raise ArenaError(
                        f"{slot.field}: an arena view handed out before the last send (a view "
                        "is valid until the next send: alloc it again) or for another field"
                    )
                seg = slot.segment
                if carried[seg] and t.data_ptr() == start + offsets[seg] + slot.offset:
                    in_place += 1
                    continue
                moved[i] = t
            elif (
                slot.nbytes
                and start < (at := t.data_ptr()) + slot.nbytes
                and at < end
                and t.device == buf.device
            ):
                raise ArenaError(
                    f"{slot.field}: a tensor made from an arena view (a slice, reshape, cast "
                    "or alias of one, or of a view spent by an earlier send); send the view "
                    "alloc returned, or a tensor of its own"
                )
        self.stats.in_place += in_place
        if not moved:
            return prepared
        self.stats.moved += len(moved)
        tensors = [moved[i].clone() if i in moved else t for i, t in enumerate(prepared.tensors)]
        return prepared._replace(tensors=tensors)

    def sent(self, prepared: Prepared, agreed: tuple[int, ...]) -> None:
        """After a payload envelope went out: its views are spent; the layout it had is the
        one ``alloc`` places tensors in while it stays agreed."""
        self.live.clear()
        if prepared.sizes == agreed:  # it only ever changes to the sizes just sent
            self.layout = prepared.slots
