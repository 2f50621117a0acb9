"""The bindings contract is typed end to end: ``mypy --strict`` sees a user's ``recv()`` as the
protocol's own header and message union, and refuses another protocol's envelope on a send."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TYPING = Path(__file__).parent / "typing"


def _mypy(path: Path, tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", str(path)],
        cwd=ROOT,
        env={**os.environ, "MYPYPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.timeout(600)
def test_a_user_program_over_a_typed_channel_type_checks(package_tree: Path) -> None:
    done = _mypy(TYPING / "user_program.py", package_tree)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.timeout(600)
def test_a_send_of_another_protocol_is_a_mypy_error(package_tree: Path) -> None:
    done = _mypy(TYPING / "wrong_protocol.py", package_tree)
    assert done.returncode == 1, done.stdout + done.stderr
    errors = re.findall(r"wrong_protocol\.py:(\d+): error: (.*)", done.stdout)
    assert len(errors) == 2, done.stdout
    assert all(line == "13" for line, _ in errors), errors
    text = " ".join(msg for _, msg in errors)
    assert 'Argument 1 to "send"' in text and '"PPEnvelope"' in text
    assert 'Argument 2 to "send"' in text and "pp_contract.Header" in text
