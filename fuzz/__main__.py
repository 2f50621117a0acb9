"""``python -m fuzz``: long fuzzing campaigns and replay of saved examples.

    python -m fuzz campaign [--seconds 180]   every campaign, then the totals (make fuzz)
    python -m fuzz decoder  [--seconds N]     random mutational decoder campaign only
    python -m fuzz atheris  [--seconds N]     coverage-guided decoder campaign only
    python -m fuzz specs    [--seconds N]     spec-loader campaign only
    python -m fuzz journal  [--seconds N]     journal reader campaign only (scan, replay, diff)
    python -m fuzz replay FILE...             re-run saved examples (exit 1 if one still fails)

Exit status 1 when any campaign found something (an untyped exception, a hang, a manifest
beyond the spec's bounds, a non-canonical accept, an unlocated spec error).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import mutators
from .campaign import CRASH_DIR, Progress, Totals, run_decoder_campaign
from .targets import ALL, ROOT

OUT_DIR = ROOT / "fuzz" / "out"


def _atheris_available() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def run_atheris(
    seconds: float, seed: int, families: Sequence[str], crash_dir: Path, names: Sequence[str]
) -> Totals | None:
    """The coverage-guided campaign in a subprocess (libFuzzer owns its process)."""
    if not _atheris_available():
        print("[atheris] not installed (pip install atheris): skipped", file=sys.stderr)
        return None
    stats = OUT_DIR / "atheris-stats.json"
    corpus = OUT_DIR / "corpus-decoder"
    corpus.mkdir(parents=True, exist_ok=True)
    stats.unlink(missing_ok=True)
    log = OUT_DIR / "atheris.log"
    env = {
        **os.environ,
        "TPWIRE_FUZZ_STATS": str(stats),
        "TPWIRE_FUZZ_SECONDS": str(seconds),
        "TPWIRE_FUZZ_SEED": str(seed),
        "TPWIRE_FUZZ_FAMILIES": ",".join(families),
        "TPWIRE_FUZZ_CRASH_DIR": str(crash_dir),
        "TPWIRE_FUZZ_TARGETS": ",".join(names),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    cmd = [
        sys.executable,
        "-m",
        "fuzz.atheris_decode",
        f"-max_total_time={int(seconds) + 120}",  # a backstop: the runner stops itself
        "-timeout=0",  # the oracle's watchdog owns SIGALRM
        "-rss_limit_mb=8192",
        "-max_len=4096",
        str(corpus),
    ]
    progress = Progress("atheris")
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            time.sleep(0.5)
            if stats.exists():
                try:
                    progress(Totals.from_dict(json.loads(stats.read_text())))
                except (ValueError, KeyError):
                    pass
    if not stats.exists():
        print(f"[atheris] produced no statistics; see {log}", file=sys.stderr)
        return None
    totals = Totals.from_dict(json.loads(stats.read_text()))
    progress(totals, True)
    if proc.returncode != 0:
        print(f"[atheris] exited {proc.returncode}; see {log}", file=sys.stderr)
        totals.findings["exception"] += 1
    return totals


def _codes(totals: Totals, indent: str = "  ") -> list[str]:
    return [f"{indent}{k:<24}{v:>12,}" for k, v in totals.labels.most_common()]


def summary(
    decoders: list[Totals], spec: Totals | None, wall: float, crash_dir: Path = CRASH_DIR
) -> tuple[list[str], bool]:
    """The closing report, and whether anything was found."""
    dec = Totals("decoder (all engines)")
    for t in decoders:
        dec.merge(t)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def row(label: str, value: int) -> str:
        return f"{label:<26}{value:>12,}"

    lines = [
        "",
        "=" * 64,
        "tpwire fuzz: totals",
        "=" * 64,
        row("decoder inputs", dec.inputs)
        + "  ("
        + ", ".join(f"{t.name} {t.inputs:,} in {t.seconds:.0f} s" for t in decoders)
        + ")",
        row("non-WireError exceptions", dec.exceptions),
        row(f"hangs (over {_slow()} s)", dec.hangs),
        row("over-bound manifests", dec.findings["over-bound"]),
        row("non-canonical accepts", dec.findings["noncanonical"]),
        f"{'slowest decode':<26}{dec.slowest * 1000:>12.1f} ms",
        f"{'time':<26}{wall:>12.1f} s (peak RSS {rss:.0f} MiB)",
        "decoder outcomes per error code:",
        *_codes(dec),
        "  (invalid = decoded, then EnvelopeInvalid; violation codes: "
        + ", ".join(f"{k} {v:,}" for k, v in dec.violations.most_common())
        + ")",
    ]
    found = bool(dec.findings)
    if spec is not None:
        found = found or bool(spec.findings)
        lines += [
            row("spec inputs", spec.inputs) + f"  (in {spec.seconds:.0f} s)",
            row("spec exceptions", spec.findings["exception"]),
            row("spec unlocated errors", spec.findings["unlocated"] + spec.findings["cli"]),
            row("spec hangs", spec.hangs),
            row("spec over memory", spec.findings["memory"]),
            f"{'slowest spec':<26}{spec.slowest * 1000:>12.1f} ms",
            "spec outcomes (first error code):",
            *_codes(spec),
        ]
    sigs = {**dec.signatures, **(spec.signatures if spec else {})}
    if sigs:
        lines.append(f"FINDINGS ({len(sigs)} distinct), examples under {_rel(crash_dir)}/:")
        for sig, s in sorted(sigs.items(), key=lambda kv: -kv[1]["count"]):
            lines.append(f"  [{sig}] x{s['count']:<7,} {s['finding']}: {s['detail'][:90]}")
            if s.get("where"):
                lines.append(f"  {'':12}at {s['where']}")
    else:
        lines.append("findings: none")
    return lines, found


def _slow() -> str:
    from .oracle import SLOW_S

    return f"{SLOW_S:g}"


def _rel(p: Path) -> str:
    p = p.resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def replay(paths: Sequence[str]) -> int:
    from .cases import Case, build
    from .oracle import run_decoder
    from .specs import run_spec
    from .targets import load

    status = 0
    for p in paths:
        path = Path(p)
        record = json.loads(path.read_text("utf-8"))
        if record.get("kind") == "spec":
            data = path.with_name(record["spec"]).read_bytes()
            out = run_spec(data)
            label, finding, detail = out.label, out.finding, out.detail
            tb = out.tb
        else:
            case = Case.from_json(record["case"])
            res = run_decoder(load(record["target"]), build(case))
            label, finding, detail, tb = res.label, res.finding, res.detail, res.tb
        print(f"{p}: {label}" + (f" ({finding}: {detail})" if finding else ""))
        if finding:
            print(tb)
            status = 1
    return status


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("campaign", "decoder", "atheris", "specs", "journal"):
        p = sub.add_parser(name)
        p.add_argument("--seconds", type=float, default=180.0, help="time budget (default 180)")
        p.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
        p.add_argument(
            "--min-decoder-inputs",
            type=int,
            default=100_000,
            help="the random decoder campaign runs at least this many inputs (default 100000)",
        )
        p.add_argument(
            "--families",
            default=",".join(mutators.FAMILIES),
            help=f"mutation families (default {','.join(mutators.FAMILIES)})",
        )
        p.add_argument("--targets", default=",".join(ALL))
        p.add_argument("--crash-dir", type=Path, default=CRASH_DIR)
    rp = sub.add_parser("replay")
    rp.add_argument("files", nargs="+")
    args = ap.parse_args(argv)
    if args.cmd == "replay":
        return replay(args.files)

    from .specs import run_spec_campaign
    from .targets import load_all

    families = [f for f in args.families.split(",") if f]
    names = [n for n in args.targets.split(",") if n]
    start = time.monotonic()
    budget = args.seconds
    shares = {
        "campaign": (0.5, 0.25, 0.25),
        "decoder": (1, 0, 0),
        "atheris": (0, 1, 0),
        "journal": (0, 0, 0),
    }
    dec_share, ath_share, spec_share = shares.get(args.cmd, (0, 0, 1))
    # the journal reader: a tenth of a whole campaign (taken from the spec share's end)
    journal_share = {"campaign": 0.1, "journal": 1.0}.get(args.cmd, 0.0)
    print(
        f"tpwire fuzz {args.cmd}: budget {budget:g} s, seed {args.seed}, families "
        f"{','.join(families)}, targets {','.join(names)}",
        file=sys.stderr,
    )
    decoders: list[Totals] = []
    if dec_share:
        decoders.append(
            run_decoder_campaign(
                load_all(names),
                seconds=budget * dec_share,
                min_inputs=args.min_decoder_inputs,
                seed=args.seed,
                families=families,
                crash_dir=args.crash_dir,
                progress=Progress("decoder"),
            )
        )
    if ath_share:
        # what the random campaign overran comes out of the coverage-guided share
        left = budget * (dec_share + ath_share) - (time.monotonic() - start)
        ath = run_atheris(
            max(left, budget * ath_share / 3), args.seed, families, args.crash_dir, names
        )
        if ath is not None:
            decoders.append(ath)
    journal_totals = None
    if journal_share:
        from .journal import run_journal_campaign

        journal_totals = run_journal_campaign(
            load_all(names), seconds=budget * journal_share, seed=args.seed
        )
    spec = None
    if spec_share:
        spec = run_spec_campaign(
            seconds=max(budget - (time.monotonic() - start), budget * spec_share),
            seed=args.seed,
            crash_dir=args.crash_dir,
            progress=Progress("spec"),
        )
    lines, found = summary(decoders, spec, time.monotonic() - start, args.crash_dir)
    if journal_totals is not None:
        from .journal import summary as journal_summary

        lines[-1:-1] = journal_summary(journal_totals)
        found = found or bool(journal_totals.findings)
    print("\n".join(lines), flush=True)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "last-run.json").write_text(
        json.dumps(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "decoder": [t.as_dict() for t in decoders],
                "spec": spec.as_dict() if spec else None,
                "journal": None
                if journal_totals is None
                else {
                    "inputs": journal_totals.inputs,
                    "labels": dict(journal_totals.labels),
                    "findings": journal_totals.findings,
                },
                "found": found,
            },
            indent=1,
        )
        + "\n",
        "utf-8",
    )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
