"""Shared test settings: hypothesis profiles (bounded in CI, long with TPWIRE_FUZZ)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools import pkgtree

settings.register_profile(
    "ci",
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=60, deadline=None)
settings.register_profile("long", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("TPWIRE_HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def package_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``tpwire`` package as a wheel lays it out (tools/pkgtree.py), for mypy runs:
    mypy does not follow the editable install's package-dir mapping."""
    return pkgtree.build(tmp_path_factory.mktemp("pkgtree"))
