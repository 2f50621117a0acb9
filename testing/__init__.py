"""Hypothesis support for tpwire protocols (the ``testing`` extra).

The generated ``*_strategies`` modules build on :mod:`tpwire.testing.strategies`: valid
envelopes that reach a spec's edges, a reference verdict computed from the declared rules,
and labelled mutants that break one named rule.
"""

from tpwire.extras import require

require("testing", "tpwire.testing")
