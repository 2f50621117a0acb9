"""Hypothesis support for tpwire protocols (the ``testing`` extra).

The generated ``*_strategies`` modules build on :mod:`tpwire.testing.strategies`: valid
envelopes that reach a spec's edges, a reference verdict computed from the declared rules,
and labelled mutants that break one named rule. :func:`check_transport` is the conformance
kit every transport passes (``tpwire.testing.transport_kit``; docs/runtime.md;
docs/architecture.md, "How to add a transport").
"""

from typing import TYPE_CHECKING, Any

from tpwire.extras import require

require("testing", "tpwire.testing")

if TYPE_CHECKING:
    from .transport_kit import check_transport

__all__ = ["check_transport"]


def __getattr__(name: str) -> Any:
    # on first use: the hypothesis plugin imports this package and needs no channel
    if name == "check_transport":
        from .transport_kit import check_transport

        return check_transport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
