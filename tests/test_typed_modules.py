"""A channel built on a generated module is typed like one built on its ``BINDINGS``, and
``recv().action`` is the protocol's action enum (issue 29 item 3): ``mypy --strict`` on the
programs in tests/typing/."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TYPING = Path(__file__).parent / "typing"


def _mypy(tree: Path, *paths: Path, extra: str = "") -> subprocess.CompletedProcess[str]:
    search = os.pathsep.join(p for p in (str(tree), extra) if p)
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", *map(str, paths)],
        cwd=ROOT,
        env={**os.environ, "MYPYPATH": search},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.timeout(600)
def test_a_channel_on_a_module_is_typed_from_it(package_tree: Path) -> None:
    done = _mypy(package_tree, TYPING / "module_channel.py")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.timeout(600)
def test_a_module_channel_refuses_another_protocol(package_tree: Path) -> None:
    done = _mypy(package_tree, TYPING / "module_wrong_protocol.py")
    assert done.returncode == 1, done.stdout + done.stderr
    errors = re.findall(r"module_wrong_protocol\.py:(\d+): error: (.*)", done.stdout)
    assert [line for line, _ in errors] == ["13", "13", "15"], done.stdout
    text = " ".join(msg for _, msg in errors)
    assert 'Argument 1 to "send"' in text and "InferV1GeneratorOnly" in text
    assert 'Argument 2 to "send"' in text and "tp_control.Header" in text
    assert '"PPAction"' in text and '"TPAction"' in text


@pytest.mark.timeout(600)
def test_the_out_of_tree_example_passing_its_module_is_strict_clean(package_tree: Path) -> None:
    """examples/preview_protocol/stream.py builds its channel on the module ``preview``."""
    example = ROOT / "examples" / "preview_protocol"
    done = _mypy(package_tree, example / "stream.py", extra=str(example))
    assert done.returncode == 0, done.stdout + done.stderr
