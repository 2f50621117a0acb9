"""`st.from_type` on generated classes draws valid values without importing the
`*_strategies` module (issue 29 item 4): the bindings register their classes when hypothesis
is already imported, tpwire's hypothesis plugin (the `hypothesis` entry point) when it is
imported after them. A process that never imports hypothesis never pays for it.

Each case runs in a fresh interpreter: the registrations are process-wide, and this test
process has imported the strategies modules long ago."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PREVIEW = ROOT / "examples" / "preview_protocol"

DRAW = """
from hypothesis import HealthCheck, given, settings, strategies as st

drawn = []

@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(st.from_type(MSG), st.from_type(HEADER))
def check(msg, header):
    assert isinstance(msg, MSG), type(msg)
    assert MOD.validate(msg) == [], (msg, MOD.validate(msg))
    assert MOD.validate_header(header) == [], (header, MOD.validate_header(header))
    drawn.append(msg)

check()
assert drawn
loaded = sorted(m for m in sys.modules if m.endswith("_strategies"))
print("OK", len(drawn), loaded)
"""


def run(setup: str, draw: str = DRAW, *, path: Path | None = None) -> str:
    """Run ``setup`` (which names the bindings MOD and the classes MSG and HEADER), then
    ``draw``, in a fresh interpreter. Its working directory is none of the checkout's: a
    ``tpwire.egg-info`` a build left there would stand for the installed metadata, entry
    points included (as for any project run from its own folder)."""
    env = dict(os.environ)
    env.pop("HYPOTHESIS_NO_PLUGINS", None)
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(path), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", "import sys\n" + textwrap.dedent(setup) + draw],
        cwd=tempfile.gettempdir(), env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("OK"), done.stdout + done.stderr
    return done.stdout


@pytest.mark.timeout(240)
def test_bindings_imported_before_hypothesis() -> None:
    # the plugin: hypothesis, imported second, registers the bindings already loaded
    out = run(
        """
        from tpwire.generated import tp_control as MOD
        assert "hypothesis" not in sys.modules
        MSG, HEADER = MOD.InferV1GeneratorOnly, MOD.Header
        """
    )
    assert "tpwire.generated.tp_control_strategies" in out, out


@pytest.mark.timeout(240)
def test_hypothesis_imported_before_the_bindings() -> None:
    # the bindings, imported second, register themselves
    run(
        """
        import hypothesis
        from tpwire.generated import tp_control_v2 as MOD
        MSG, HEADER = MOD.InferV1GeneratorOnly, MOD.Header
        """
    )


@pytest.mark.timeout(240)
def test_an_out_of_tree_package_in_either_order() -> None:
    # examples/preview_protocol's own package: tpwire's plugin cannot name it, and still
    # finds it loaded; imported after hypothesis it registers itself
    for first, second in (
        ("from preview_wire import preview as MOD", "import hypothesis"),
        ("import hypothesis", "from preview_wire import preview as MOD"),
    ):
        out = run(
            f"""
            {first}
            {second}
            MSG, HEADER = MOD.Preview, MOD.Header
            """,
            path=PREVIEW,
        )
        assert "preview_wire.preview_strategies" in out, out


@pytest.mark.timeout(240)
def test_a_compiled_module_registers_too() -> None:
    # tpwire.codegen.compile(): its strategies are compiled on first use
    run(
        f"""
        import hypothesis
        from tpwire.codegen import compile
        ROOT = {str(ROOT)!r}

        MOD = compile(ROOT + "/examples/preview_protocol/spec/preview.yaml")
        MSG, HEADER = MOD.Preview, MOD.Header
        """,
        DRAW.replace('m.endswith("_strategies")', '"strategies" in m'),
    )


@pytest.mark.timeout(240)
def test_the_runtime_does_not_import_hypothesis() -> None:
    # a worker imports bindings and never pays for hypothesis
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from tpwire.generated import tp_control, tp_control_v2, pp_contract\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'hypothesis'"
            " or m.startswith('tpwire.testing'))\n"
            "print(bad)\n",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
