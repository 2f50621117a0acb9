"""``python -m bench``: run every measurement side by side and write the report.

python -m bench            # the full run (make bench): worlds 2 and 4
python -m bench --quick    # under a minute: world 2, fewer iterations
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench import codec, compare, cpu_path, report
from bench import envelopes as E
from bench.transports import Plan, rank_entry

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run_world(world: int, plan: Plan, timeout: float) -> dict[str, dict[str, float]]:
    """Spawn ``world`` ranks; each series becomes per-iteration latency (slowest rank)."""
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as out:
        port = _free_port()
        procs = [
            ctx.Process(target=rank_entry, args=(r, world, port, plan, out)) for r in range(world)
        ]
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout
        for p in procs:
            p.join(max(deadline - time.monotonic(), 0.1))
        alive = [p for p in procs if p.is_alive()]
        for p in alive:
            p.kill()
        if alive or any(p.exitcode != 0 for p in procs):
            codes = [p.exitcode for p in procs]
            raise SystemExit(f"bench: world {world} failed (exit codes {codes})")
        ranks = [json.loads(Path(f"{out}/rank{r}.json").read_text()) for r in range(world)]
    stats: dict[str, dict[str, float]] = {}
    keys = dict.fromkeys(k for rk in ranks for k in rk)  # some series are a worker's only
    for key in keys:
        per_rank = [rk[key] for rk in ranks if key in rk]
        latency = [max(xs) for xs in zip(*per_rank, strict=True)]
        stats[key] = _stats(latency)
        if key in SPLIT:
            # iteration k moved envelope (warmup + k) % 24 of the stream (run_rank)
            recompute = [E.recompute((plan.warmup + k) % 24) for k in range(len(latency))]
            for name, which in (("steady", False), ("recompute", True)):
                part = [x for x, r in zip(latency, recompute, strict=True) if r is which]
                if len(part) >= 2:
                    stats[f"{key}@{name}"] = _stats(part)
    return stats


#: series also summarized apart for the Scope stream's steady and recompute chunks
SPLIT = ("scope/tpwire-arena", "scope/tpwire", "scope/floor")


def _stats(latency: list[float]) -> dict[str, float]:
    q = statistics.quantiles(latency, n=10)
    return {
        "median_us": statistics.median(latency) * 1e6,
        "mean_us": statistics.fmean(latency) * 1e6,
        "p10_us": q[0] * 1e6,
        "p90_us": q[-1] * 1e6,
        "n": len(latency),
    }


def nccl_worlds(gpus: int, quick: bool) -> list[int]:
    """The NCCL world sizes this machine can run, a GPU per rank (none below two GPUs)."""
    worlds = [w for w in (2, 4) if w <= gpus]
    return worlds[:1] if quick else worlds


def _shown(path: Path) -> str:
    """``path`` as a report names it: relative to the checkout when it lies inside it."""
    full = path.resolve()
    return str(full.relative_to(ROOT) if full.is_relative_to(ROOT) else full)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="world 2 only, fewer iterations")
    ap.add_argument("--worlds", type=int, nargs="+", help="world sizes (default 2 4)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs", help="where the report goes")
    ap.add_argument(
        "--render",
        action="store_true",
        help="only rewrite benchmarks.md and .png from the benchmarks.json of the last run "
        "(with --against: compared with that run instead)",
    )
    ap.add_argument(
        "--against",
        type=Path,
        help="the benchmarks.json to compare with (default: the one in --out, from the last run)",
    )
    ap.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when a figure of tpwire's is slower than in the run compared with",
    )
    args = ap.parse_args(argv)
    # the run before this one, read before anything is measured or written
    previous_path = args.against or args.out / "benchmarks.json"
    previous = None
    if args.against is not None or (previous_path.is_file() and not args.render):
        try:
            previous = compare.load(previous_path)
        except compare.Unreadable as exc:
            if args.against is not None:
                print(f"bench: --against {exc}", file=sys.stderr)
                return 2
            print(f"bench: not comparing with the last run: {exc}", file=sys.stderr)
    if args.render:
        last = json.loads((args.out / "benchmarks.json").read_text())
        if previous is not None:  # --against: the last run compared with that one instead
            last["against"] = compare.against(previous, _shown(previous_path))
            (args.out / "benchmarks.json").write_text(json.dumps(last, indent=1) + "\n")
        (args.out / "benchmarks.md").write_text(report.markdown(last))
        report.plot(last, args.out / "benchmarks.png")
        print(report.summary(last))
        print(compare.summary(last))
        return 1 if args.strict and compare.regressed(last) else 0
    kinds = ("noop", "small", "scope", "cond_on_update")
    worlds = args.worlds or ([2] if args.quick else [2, 4])
    rounds, iters, warmup, n_codec = (3, 20, 3, 300) if args.quick else (6, 50, 5, 2000)
    started = time.monotonic()
    print(f"bench: CPU codec costs ({n_codec} calls each)", flush=True)
    codec_rows = codec.measure(kinds, n_codec)
    print(f"bench: tpwire's CPU path per envelope ({n_codec // 2} in a tight loop)", flush=True)
    path_rows = cpu_path.measure(kinds, n_codec // 2)
    cuda = codec.cuda_rows(kinds, n_codec // 4)
    print("bench: CUDA " + ("measured" if cuda else "skipped: no CUDA device"), flush=True)
    transports: dict[int, dict[str, dict[str, float]]] = {}
    # floor+path: the floor plus tpwire's CPU path per side as measured alone (after memory
    # traffic, as a stream runs it)
    spin = {r["kind"]: (r["traffic"]["source"][0], r["traffic"]["after"][0]) for r in path_rows}
    for world in worlds:
        plan = Plan(kinds, rounds, iters, warmup, pp=True, spin_us=spin)
        print(f"bench: world {world}: {rounds} rounds x {iters} iterations", flush=True)
        transports[world] = run_world(world, plan, timeout=600)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    nccl: dict[str, dict[str, dict[str, float]]] = {}
    for world in nccl_worlds(gpus, args.quick):
        plan = Plan(kinds, rounds, iters, warmup, pp=True, backend="nccl", device="cuda")
        print(f"bench: NCCL world {world}: {rounds} rounds x {iters} iterations", flush=True)
        nccl[str(world)] = run_world(world, plan, timeout=600)
    if not nccl:
        print(f"bench: NCCL skipped: {gpus} GPU(s), it needs two", flush=True)
    result: dict[str, Any] = {
        "command": "make bench" + (" ARGS=--quick" if args.quick else ""),
        "revision": compare.revision(ROOT),
        "machine": report.machine(),
        "codec": codec_rows,
        "cpu_path": path_rows,
        "cuda": cuda,
        "transports": {str(w): s for w, s in transports.items()},
        "gpus": gpus,
        "nccl": nccl,
        "plan": {"rounds": rounds, "iters": iters, "warmup": warmup},
        "seconds": time.monotonic() - started,
    }
    if previous is not None:
        result["against"] = compare.against(previous, _shown(previous_path))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmarks.json").write_text(json.dumps(result, indent=1) + "\n")
    text = report.markdown(result)
    (args.out / "benchmarks.md").write_text(text)
    report.plot(result, args.out / "benchmarks.png")
    print(report.summary(result))
    print(compare.summary(result))
    print(f"bench: wrote {args.out / 'benchmarks.md'} and benchmarks.png "
          f"in {result['seconds']:.0f} s")  # fmt: skip
    return 1 if args.strict and compare.regressed(result) else 0


if __name__ == "__main__":
    sys.exit(main())
