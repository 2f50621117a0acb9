"""Line coverage of the wire and validation code, from a coverage.py JSON report.

    python -m fuzz.coverage_report fuzz/out/coverage.json [--min 95]

``make coverage`` writes the JSON (with per-function regions) and runs this: it prints
``runtime/wire.py`` and, for every generated protocol module, the functions that decode
(``read_frame0``, ``decode``, ``_read_*``) and validate (``validate``, ``validate_header``,
``check``, ``_validate_*``, ``_check_decoded_*``, ``_rules_*``) with their missing lines, then the total
against the aim (95% of lines). Exit status 1 when the total is below ``--min``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

DECODE = ("read_frame0", "decode", "_read_", "_decoded_validator")
VALIDATE = ("validate", "validate_header", "check", "_ids")
VALIDATE_PREFIXES = ("_validate", "_check_decoded", "_rules", "_header_rules")


def _kind(function: str) -> str | None:
    name = function.split(".")[-1]
    if name in DECODE or any(name.startswith(p) for p in DECODE if p.endswith("_")):
        return "decode"
    if name in VALIDATE or name.startswith(VALIDATE_PREFIXES):
        return "validate"
    return None


def ranges(lines: Iterable[int]) -> str:
    out: list[str] = []
    for n in sorted(lines):
        if out and "-" not in out[-1] and int(out[-1]) == n - 1:
            out[-1] = f"{out[-1]}-{n}"
        elif out and "-" in out[-1] and int(out[-1].split("-")[1]) == n - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ", ".join(out)


def _row(label: str, covered: int, total: int, missing: Sequence[int]) -> str:
    pct = 100.0 * covered / total if total else 100.0
    miss = f"  missing {ranges(missing)}" if missing else ""
    return f"  {label:<44} {total:>5} lines {pct:6.1f}%{miss}"


def report(data: dict[str, Any]) -> tuple[list[str], float]:
    files = data["files"]
    lines = ["wire and validation code (line coverage):"]
    covered = total = 0
    for path, f in sorted(files.items()):
        p = Path(path)
        if p.as_posix().endswith("runtime/wire.py"):
            s = f["summary"]
            lines.append(
                _row(p.as_posix(), s["covered_lines"], s["num_statements"], f["missing_lines"])
            )
            covered += s["covered_lines"]
            total += s["num_statements"]
        elif p.parent.name == "generated" and not p.stem.endswith("_strategies"):
            groups: dict[str, list[int]] = {"decode": [0, 0], "validate": [0, 0]}
            missing: dict[str, list[int]] = {"decode": [], "validate": []}
            for fname, region in f.get("functions", {}).items():
                kind = _kind(fname)
                if kind is None:
                    continue
                s = region["summary"]
                groups[kind][0] += s["covered_lines"]
                groups[kind][1] += s["num_statements"]
                missing[kind] += region["missing_lines"]
            for kind, (c, n) in groups.items():
                if n:
                    lines.append(_row(f"{p.as_posix()} {kind}", c, n, missing[kind]))
                    covered += c
                    total += n
    pct = 100.0 * covered / total if total else 0.0
    lines.append(f"  {'total':<44} {total:>5} lines {pct:6.1f}%  (aim 95%)")
    return lines, pct


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fuzz.coverage_report")
    ap.add_argument("json", type=Path)
    ap.add_argument("--min", type=float, default=0.0, help="fail below this total (percent)")
    args = ap.parse_args(argv)
    lines, pct = report(json.loads(args.json.read_text("utf-8")))
    print("\n".join(lines))
    return 1 if pct < args.min else 0


if __name__ == "__main__":
    sys.exit(main())
