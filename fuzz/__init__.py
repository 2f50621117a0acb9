"""Fuzzing campaigns for tpwire: generated decoders and the spec front end.

``python -m fuzz campaign`` (``make fuzz``) runs every campaign under one time budget and
prints the totals; ``python -m fuzz replay FILE`` re-runs a saved example. The same
mutators and oracles back the bounded hypothesis properties of ``tests/test_fuzz_*.py``
(``fuzz.properties``), so CI and a long campaign check exactly the same things.

Modules: ``targets`` (protocols under test and their spec bounds), ``cases`` (plain-data,
JSON-serialisable frames), ``mutators`` (frame mutations), ``oracle`` (what every decoder
outcome must satisfy), ``campaign`` (the random mutational campaign), ``specs`` (spec-loader
mutations, oracle and campaign), ``atheris_decode`` (coverage-guided decoder fuzzing).
"""
