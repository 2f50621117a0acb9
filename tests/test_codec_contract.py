"""A generated module states the runtime contract it was generated for; a runtime that runs
another refuses it at import with one line naming both, instead of failing later, mid-send,
with a bare ``TypeError`` from an interface that moved."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

from tpwire.runtime import ContractMismatch
from tpwire.runtime.dtypes import CODEC_CONTRACT

GENERATED = Path(__file__).resolve().parents[1] / "generated" / "tp_control.py"


def _import(path: Path, name: str) -> object:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    return module


def test_the_shipped_modules_state_the_runtime_contract() -> None:
    assert f"    contract={CODEC_CONTRACT},\n" in GENERATED.read_text()
    _import(GENERATED, "contract_ok")


@pytest.mark.parametrize("stated", ["1", None])
def test_a_module_of_another_contract_is_refused_at_import(
    tmp_path: Path, stated: str | None
) -> None:
    text = GENERATED.read_text()
    line = f"    contract={CODEC_CONTRACT},\n"
    # a module from before the contract moved (None: from before contracts were numbered)
    old = text.replace(line, "" if stated is None else f"    contract={stated},\n")
    assert old != text
    path = tmp_path / "old_tp_control.py"
    path.write_text(old)
    with pytest.raises(ContractMismatch) as info:
        _import(path, "old_tp_control")
    message = str(info.value)
    assert "\n" not in message
    made = (
        "a tpwire from before runtime contracts were numbered"
        if stated is None
        else f"runtime contract {stated}"
    )
    assert re.search(
        rf"old_tp_control was generated for {made}; this tpwire \(.+\) runs "
        rf"contract {CODEC_CONTRACT}: generate it again \(`tpwire gen`\)",
        message,
    ), message
