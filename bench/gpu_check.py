"""``make gpu-check`` (``python -m bench.gpu_check``): one prepared pass over what needs a GPU.

On a machine with a CUDA device it runs, each section on its own (a failure is recorded with
its error and the next section still runs), under an overall time budget:

1. ``device``: the GPUs, torch, CUDA, NCCL and driver versions, a smoke kernel;
2. ``pytest`` on ``tests/test_gpu.py`` (CUDA materialization: host -> device ``encode``,
   decode into CUDA buffers, a side stream; the 2-process device channel) and on
   ``tests/test_wire.py -k cuda``, in a subprocess with a timeout: pass/fail per test;
3. ``channel``: 2 processes over gloo, both on cuda:0, a ``BroadcastChannel`` with device
   tensors (small and Scope-sized envelopes) beside a CPU channel and the floor; every
   worker must receive identical tensors on the device, and the refusals (sender before
   frame 0, worker after the receive) must hold;
4. ``codec``: ``bench.codec.cuda_rows`` (encode/decode with device tensors) beside the
   same calls on CPU tensors;
5. ``digest``: the frame 1 digest of device tensors (hashed on the host, so a D2H copy
   first) against CPU tensors, with the bare D2H copies beside it;
6. ``nccl``: the transport tables of ``make bench`` over NCCL, a GPU per rank, where the
   machine has two or more GPUs (otherwise "skipped: 1 GPU").

It writes ``docs/benchmarks-gpu.md`` (``--out``), and when ``$OUT`` is set also
``$OUT/benchmarks-gpu.md``, ``$OUT/gpu-check.json`` and the logs under
``$OUT/gpu-check-logs/`` (otherwise ``build/gpu-check/``). Exit status: 0 without CUDA
(nothing to check), 0 when every section passes, 1 when any fails or did not run.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import importlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import types
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
#: tpwire laid out as a wheel lays it out (``make gpu-check`` builds it: tools/pkgtree.py)
PKGTREE = ROOT / "build" / "pkgtree"
NO_CUDA = "gpu-check: no CUDA device, nothing to check"
DEFAULT_REPORT = ROOT / "docs" / "benchmarks-gpu.md"
#: the kinds of bench/envelopes.py measured here (cond_on_update, the optimize mode, is
#: measured by ``make bench``)
KINDS = ("noop", "small", "scope")
#: iterations of the channel section (after warmup), per kind
CHANNEL_ITERS = {"small": 30, "scope": 15}
CHANNEL_WARMUP = 3
#: calls per timing of the codec and digest sections
CODEC_CALLS = 200
DIGEST_CALLS = 100
#: a section does not start with less budget left than this (seconds)
MIN_START_S = 20.0


class CheckFailed(Exception):
    """A section ran to its end and found something wrong (its message says what)."""


@dataclasses.dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    align: str = ""  # one of "lrc" per column; left when missing


@dataclasses.dataclass
class Section:
    key: str
    title: str
    timeout: float
    status: str = "not run"  # pass | fail | skipped | not run
    seconds: float = 0.0
    summary: str = ""
    error: str | None = None
    tables: list[Table] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    data: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Run:
    budget: float
    report: Path
    logs: Path
    out: Path | None
    started: float = dataclasses.field(default_factory=time.monotonic)
    date: str = dataclasses.field(
        default_factory=lambda: datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    )
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    sections: list[Section] = dataclasses.field(default_factory=list)
    current: Section | None = None
    deadline: float | None = None
    section_started: float = 0.0
    finished: bool = False
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def remaining(self) -> float:
        return self.budget - self.elapsed()

    def result(self) -> dict[str, Any]:
        return {
            "command": "make gpu-check",
            "date": self.date,
            "budget_s": self.budget,
            "seconds": round(self.elapsed(), 1),
            "finished": self.finished,
            "info": self.info,
            "sections": [{k: v for k, v in dataclasses.asdict(s).items()} for s in self.sections],
        }


def say(run: Run | None, line: str) -> None:
    at = f"[{run.elapsed():6.1f} s] " if run is not None else ""
    print(f"gpu-check: {at}{line}", flush=True)


# --- statistics and formatting ------------------------------------------------------------


def spread(samples_us: Sequence[float]) -> list[float]:
    """``[median, p10, p90]`` of samples (microseconds)."""
    if len(samples_us) == 1:
        return [samples_us[0]] * 3
    q = statistics.quantiles(samples_us, n=10)
    return [statistics.median(samples_us), q[0], q[-1]]


def timed_us(fn: Callable[[], object], n: int, *, cuda: bool) -> list[float]:
    """``[median, p10, p90]`` microseconds of ``fn`` (to a device synchronize when ``cuda``)."""
    for _ in range(max(n // 10, 5)):
        fn()
    if cuda:
        torch.cuda.synchronize()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        if cuda:
            torch.cuda.synchronize()
        samples.append((time.perf_counter_ns() - t0) / 1e3)
    return spread(samples)


def us(x: float) -> str:
    return f"{x:,.1f}" if x < 100 else f"{x:,.0f}"


def cell(s: Sequence[float]) -> str:
    """``median (p10-p90)`` in microseconds."""
    return f"{us(s[0])} ({us(s[1])}-{us(s[2])})"


def gbps(nbytes: int, t_us: float) -> str:
    return f"{nbytes / (t_us * 1e3):.1f}" if t_us > 0 and nbytes else "n/a"


# --- the report ---------------------------------------------------------------------------

VERDICT = {"pass": "pass", "fail": "**FAIL**", "skipped": "skipped", "not run": "**not run**"}


def _table(t: dict[str, Any]) -> list[str]:
    out = [f"**{t['title']}**", ""] if t["title"] else []
    align = t.get("align") or ""
    marks = [
        {"r": "---:", "c": ":---:"}.get(align[i] if i < len(align) else "l", "---")
        for i in range(len(t["header"]))
    ]
    out.append("| " + " | ".join(t["header"]) + " |")
    out.append("|" + "|".join(marks) + "|")
    out += [
        "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |"
        for row in t["rows"]
    ]
    return [*out, ""]


def overall(result: dict[str, Any]) -> str:
    bad = [s for s in result["sections"] if s["status"] in ("fail", "not run")]
    if not result.get("finished"):
        return "**incomplete** (the check stopped before its end)"
    return "**pass**" if not bad else f"**FAIL** ({len(bad)} section(s))"


def render(result: dict[str, Any]) -> str:
    """docs/benchmarks-gpu.md from one run's result (every figure comes from ``result``)."""
    info = result.get("info") or {}
    gpus = info.get("gpus") or []
    names = ", ".join(
        f"{g['name']} ({g['memory_gib']:.0f} GiB, sm_{g['capability']})" for g in gpus
    )
    out = [
        "# GPU check: CUDA materialization, a device channel, NCCL",
        "",
        "<!-- written by `make gpu-check` (bench/gpu_check.py); do not edit by hand -->",
        "",
        f"Command: `{result['command']}` ({result['seconds']:.0f} s of a {result['budget_s']:.0f} s "
        f"budget), {result['date']}. Overall: {overall(result)}.",
        "",
        f"Machine: {info.get('cpu', '?')}; {info.get('os', '?')}; Python {info.get('python', '?')}; "
        f"torch {info.get('torch', '?')}; CUDA {info.get('cuda', '?')}; "
        f"cuDNN {info.get('cudnn', '?')}; NCCL {info.get('nccl', '?')}; "
        f"driver {info.get('driver', '?')}; {len(gpus)} GPU(s): {names or 'none'}. "
        f"Source: {info.get('git', '?')}.",
        "",
        "## Verdicts",
        "",
    ]
    out += _table(
        {
            "title": "",
            "header": ["section", "verdict", "seconds", "what it found"],
            "rows": [
                [
                    s["title"],
                    VERDICT.get(s["status"], s["status"]),
                    f"{s['seconds']:.1f}",
                    s["summary"] or "",
                ]
                for s in result["sections"]
            ],
            "align": "lcrl",
        }
    )
    for s in result["sections"]:
        out += [f"## {s['title']}", "", f"Verdict: {VERDICT.get(s['status'], s['status'])}."]
        if s["summary"]:
            out[-1] += f" {s['summary']}"
        out.append("")
        if s.get("error"):
            out += ["```text", s["error"].rstrip(), "```", ""]
        for t in s.get("tables") or ():
            out += _table(t)
        for note in s.get("notes") or ():
            out += [note, ""]
    return "\n".join(out).rstrip() + "\n"


def write_report(run: Run) -> list[Path]:
    """The report (and the raw result when $OUT is set); returns what was written."""
    result = run.result()
    text = render(result)
    raw = json.dumps(result, indent=1, default=str) + "\n"
    written = []
    targets = [(run.report, text)]
    if run.out is not None:
        targets += [(run.out / "benchmarks-gpu.md", text), (run.out / "gpu-check.json", raw)]
    else:
        targets.append((run.logs / "gpu-check.json", raw))
    for path, body in targets:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
            written.append(path)
        except OSError as exc:
            say(run, f"could not write {path}: {exc}")
    return written


# --- running sections ---------------------------------------------------------------------


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, CheckFailed):
        return str(exc)
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return tb[-6000:]


def run_section(run: Run, sec: Section, fn: Callable[[Run, Section, float], None]) -> None:
    if run.remaining() < MIN_START_S:
        sec.status = "not run"
        sec.summary = f"the time budget ({run.budget:.0f} s) was spent before it could start"
        say(run, f"{sec.key}: NOT RUN ({sec.summary})")
        return
    timeout = max(min(sec.timeout, run.remaining()), 1.0)
    say(run, f"{sec.key}: {sec.title} (timeout {timeout:.0f} s)")
    with run.lock:
        run.current, run.deadline = sec, time.monotonic() + timeout + 30
        run.section_started = t0 = time.monotonic()
    try:
        fn(run, sec, timeout)
        if sec.status == "not run":
            sec.status = "pass"
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # SystemExit from bench helpers too: record, go on
        sec.status = "fail"
        sec.error = _error_text(exc)
        first = (str(exc).strip().splitlines() or [""])[0]
        if isinstance(exc, CheckFailed):
            sec.summary = first[:300]
        elif not sec.summary:
            sec.summary = f"{type(exc).__name__}: {first}"[:300]
    finally:
        sec.seconds = time.monotonic() - t0
        with run.lock:
            run.current, run.deadline = None, None
    say(run, f"{sec.key}: {sec.status.upper()} in {sec.seconds:.1f} s; {sec.summary}")
    if sec.error:
        print(sec.error, file=sys.stderr, flush=True)
    write_report(run)


def _watchdog(run: Run) -> None:
    """A section that hangs in this process cannot be interrupted: record it, write the
    report with what ran, and exit 1 (a hard limit, ``budget + 90`` s, backs it up)."""
    hard = run.started + run.budget + 90
    while True:
        time.sleep(0.5)
        with run.lock:
            sec, deadline, done = run.current, run.deadline, run.finished
        if done:
            return
        now = time.monotonic()
        if (sec is not None and deadline is not None and now > deadline) or now > hard:
            with run.lock:
                if sec is not None:
                    sec.status = "fail"
                    sec.seconds = now - run.section_started
                    sec.summary = "hung: still running past its timeout; the check stopped here"
                for s in run.sections:
                    if s.status == "not run" and s is not sec:
                        s.summary = "not run: an earlier section hung"
            say(run, "a section hung past its timeout: writing the report and exiting 1")
            write_report(run)
            os._exit(1)


def _run_process(
    cmd: list[str], *, timeout: float, log: Path, env: dict[str, str] | None = None
) -> tuple[int | None, str]:
    """Run ``cmd`` in its own session; on timeout kill its whole process group (the ranks a
    test spawned too). Returns (exit code or None on timeout, output)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w+") as f:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)
        f.seek(0)
        return code, f.read()


def subprocess_env() -> dict[str, str]:
    """This environment with the checkout's package tree (tpwire, as ``make gpu-check``
    lays it out with tools/pkgtree.py) and root (bench) importable."""
    env = dict(os.environ)
    paths = [str(PKGTREE), str(ROOT)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def import_bench(name: str) -> tuple[types.ModuleType, str | None]:
    """Import a bench module; where ``jsonschema`` is not installed (the codec module
    imports it for its CPU comparison), import it with an empty stand-in, since what this
    check calls never uses it. Returns the module and a note when the stand-in was used."""
    note = (
        f"`jsonschema` is not installed here: `{name}` was imported with an empty stand-in "
        "module for it (the functions used by this check never call it)."
    )
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != "jsonschema":
            raise
        stand_in = types.ModuleType("jsonschema", "an empty stand-in (bench/gpu_check.py)")
        stand_in.__dict__["TPWIRE_STAND_IN"] = True
        sys.modules["jsonschema"] = stand_in
        module = importlib.import_module(name)
    used = getattr(sys.modules.get("jsonschema"), "TPWIRE_STAND_IN", False)
    return module, note if used else None


# --- 1. the device --------------------------------------------------------------------------


def _git() -> str:
    # a device machine may get a copy of the working tree whose git metadata is older than
    # the tree: the caller can say which source it sent
    given = os.environ.get("GPU_CHECK_SOURCE")
    if given:
        return given
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"
    return f"commit {sha}" + (" with uncommitted changes" if dirty else "")


def _driver() -> str:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return "unknown (no nvidia-smi)"
    try:
        got = subprocess.run(
            [exe, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return "unknown (nvidia-smi failed)"
    return got[0] if got else "unknown"


def machine_info() -> dict[str, Any]:
    from bench.report import cpu_name  # needs no jsonschema

    return {
        "cpu": cpu_name(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "git": _git(),
    }


def section_device(run: Run, sec: Section, timeout: float) -> None:
    count = torch.cuda.device_count()
    gpus: list[dict[str, Any]] = []
    for i in range(count):
        p = torch.cuda.get_device_properties(i)
        gpus.append(
            {
                "index": i,
                "name": p.name,
                "capability": f"{p.major}{p.minor}",
                "memory_gib": p.total_memory / 2**30,
                "multiprocessors": p.multi_processor_count,
            }
        )
    run.info["gpus"] = gpus
    backend: Any = torch.backends.cudnn  # untyped in torch's stubs
    cudnn = backend.version() if backend.is_available() else None
    run.info["cudnn"] = str(cudnn) if cudnn else "none"
    try:
        nccl_module: Any = torch.cuda.nccl
        nccl = nccl_module.version()
        run.info["nccl"] = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl)
    except Exception as exc:  # not built with NCCL
        run.info["nccl"] = f"unavailable ({type(exc).__name__})"
    run.info["driver"] = _driver()
    x = torch.arange(1 << 20, dtype=torch.int64, device="cuda")
    total = int(x.sum().item())
    if total != (1 << 20) * ((1 << 20) - 1) // 2:
        raise CheckFailed(f"smoke kernel: sum(arange(2**20)) = {total} on the device")
    sec.tables.append(
        Table(
            "",
            ["index", "name", "compute capability", "memory (GiB)", "SMs"],
            [
                [
                    str(g["index"]),
                    g["name"],
                    f"sm_{g['capability']}",
                    f"{g['memory_gib']:.1f}",
                    str(g["multiprocessors"]),
                ]
                for g in gpus
            ],
            "llcrr",
        )
    )
    sec.summary = (
        f"{count} x {gpus[0]['name'] if gpus else '?'}; torch {torch.__version__}, "
        f"CUDA {run.info['cuda']}, NCCL {run.info['nccl']}, driver {run.info['driver']}"
    )


# --- 2. pytest ------------------------------------------------------------------------------


def junit_cases(path: Path) -> list[dict[str, Any]]:
    """Every test case of a junit XML file: name, outcome, seconds, message."""
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = (node.get("message") or "").strip()
                break
        cls = case.get("classname", "")
        cases.append(
            {
                "name": f"{cls.rsplit('.', 1)[-1]}::{case.get('name', '?')}",
                "outcome": outcome,
                "seconds": float(case.get("time") or 0.0),
                "message": message,
            }
        )
    return cases


def pytest_counts(cases: Sequence[dict[str, Any]], output: str) -> dict[str, int]:
    """Counts per outcome from the cases, or from pytest's summary line without them."""
    counts: dict[str, int] = {}
    if cases:
        for c in cases:
            counts[c["outcome"]] = counts.get(c["outcome"], 0) + 1
        return counts
    for n, what in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", output):
        counts["error" if what.startswith("error") else what] = int(n)
    return counts


def pytest_section(args: list[str]) -> Callable[[Run, Section, float], None]:
    def section(run: Run, sec: Section, timeout: float) -> None:
        xml = run.logs / f"{sec.key}.xml"
        xml.unlink(missing_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "-rs",
            f"--junitxml={xml}",
            *args,
        ]
        code, output = _run_process(
            cmd, timeout=timeout, log=run.logs / f"{sec.key}.log", env=subprocess_env()
        )
        cases = junit_cases(xml) if xml.exists() else []
        counts = pytest_counts(cases, output)
        sec.data = {"exit_code": code, "counts": counts, "command": " ".join(cmd[2:])}
        shown = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no tests ran"
        sec.summary = f"{shown} (`pytest {' '.join(args)}`)"
        if cases:
            sec.tables.append(
                Table(
                    "",
                    ["test", "outcome", "seconds", "message"],
                    [
                        [f"`{c['name']}`", c["outcome"], f"{c['seconds']:.2f}", c["message"][:200]]
                        for c in cases
                    ],
                    "lcrl",
                )
            )
        if code is None:
            tail = output[-4000:]
            raise CheckFailed(
                f"pytest timed out after {timeout:.0f} s; the end of its output:\n{tail}"
            )
        bad = counts.get("failed", 0) + counts.get("error", 0)
        if code != 0 or bad:
            raise CheckFailed(f"pytest exit code {code}: {shown}\n{output[-6000:]}")
        if not counts.get("passed"):
            raise CheckFailed(f"pytest ran no test: {shown}\n{output[-2000:]}")
        if counts.get("skipped"):
            raise CheckFailed(
                f"{counts['skipped']} test(s) skipped on a machine with CUDA: {shown}\n"
                + output[-2000:]
            )

    return section


# --- 3. the device channel over gloo ----------------------------------------------------------


def _mp_harness() -> Any:
    """tests/mp.py (``run_ranks``) and tests/mp_scenarios.py, importable by the ranks too."""
    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    tree = str(PKGTREE)
    if tree not in sys.path:
        sys.path.insert(0, tree)
    return importlib.import_module("mp")


def channel_problems(results: Sequence[dict[str, Any] | None], expected: int) -> list[str]:
    """What is wrong with the ranks' results of ``cuda_channel`` (empty: all held).

    ``expected``: envelopes each worker must have received in the timed part."""
    problems: list[str] = []
    if len(results) < 2 or any(r is None for r in results):
        return ["a rank returned no result"]
    sender = results[0] or {}
    problems += [f"rank 0: {p}" for p in sender.get("problems", [])]
    if not sender.get("sender_refused"):
        problems.append("rank 0 did not refuse the inconsistent envelope before frame 0")
    for rank, res in enumerate(results[1:], start=1):
        res = res or {}
        problems += [f"rank {rank}: {p}" for p in res.get("problems", [])]
        got = res.get("received", [])
        if len(got) != expected:
            problems.append(f"rank {rank} received {len(got)} envelopes, expected {expected}")
        for row in got:
            if not (row.get("equal") and row.get("on_device")):
                problems.append(
                    f"rank {rank}: {row.get('kind')} over {row.get('variant')} call_id "
                    f"{row.get('call_id')}: equal={row.get('equal')} "
                    f"on_device={row.get('on_device')}"
                )
        if not res.get("worker_refused"):
            problems.append(f"rank {rank} did not refuse the forged envelope")
        after = res.get("after_refusal") or {}
        if not (after.get("equal") and after.get("on_device")):
            problems.append(f"rank {rank}: the envelope after the refusal: {after}")
        if res.get("last") != ["SHUTDOWN", "SHUTDOWN"]:
            problems.append(f"rank {rank} ended with {res.get('last')}, not SHUTDOWN on both")
    return problems


def channel_stats(results: Sequence[dict[str, Any]]) -> dict[str, list[float]]:
    """Per series: ``[median, p10, p90]`` us of each iteration's slowest rank."""
    stats = {}
    for key in results[0]["series"]:
        per_rank = [r["series"][key] for r in results]
        latency = [max(xs) * 1e6 for xs in zip(*per_rank, strict=True)]
        stats[key] = spread(latency)
    return stats


CHANNEL_COLUMNS = (
    ("cuda", "device channel, device tensors"),
    ("cuda-host", "device channel, host tensors in"),
    ("cpu", "CPU channel"),
    ("floor-cuda", "floor, device buffer"),
    ("floor-cpu", "floor, host buffer"),
)


def channel_table(stats: dict[str, list[float]]) -> Table:
    rows = []
    for kind, title in (("small", "small v1 INFER"), ("scope", "Scope v1 INFER 320x576")):
        if f"{kind}/cuda" not in stats:
            continue
        row = [title] + [cell(stats[f"{kind}/{v}"]) for v, _ in CHANNEL_COLUMNS]
        med = {v: stats[f"{kind}/{v}"][0] for v, _ in CHANNEL_COLUMNS}
        row.append(f"{med['cuda'] / med['floor-cuda']:.2f}x")
        row.append(f"{med['cuda'] / med['cpu']:.2f}x")
        rows.append(row)
    header = ["envelope", *(t for _, t in CHANNEL_COLUMNS), "device / device floor", "device / CPU"]
    return Table("", header, rows, "l" + "r" * (len(header) - 1))


def section_channel(run: Run, sec: Section, timeout: float) -> None:
    mp = _mp_harness()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            ranks = mp.run_ranks(
                "cuda_channel",
                Path(tmp),
                world=2,
                timeout=timeout,
                small=CHANNEL_ITERS["small"],
                scope=CHANNEL_ITERS["scope"],
                warmup=CHANNEL_WARMUP,
            )
        finally:
            for log in Path(tmp).glob("rank*.log"):
                shutil.copy(log, run.logs / f"channel-{log.name}")
    codes = [r.exitcode for r in ranks]
    if codes != [0, 0]:
        logs = "\n".join(f"--- rank {r.rank} (exit {r.exitcode}):\n{r.log[-3000:]}" for r in ranks)
        raise CheckFailed(f"rank exit codes {codes}\n{logs}")
    results = [r.result for r in ranks]
    if any(r is None for r in results):
        raise CheckFailed("a rank returned no result")
    expected = (CHANNEL_ITERS["small"] + CHANNEL_ITERS["scope"] + 2 * CHANNEL_WARMUP) * 3
    problems = channel_problems(results, expected)
    stats = channel_stats(results)
    sec.data = {"stats": stats, "problems": problems}
    sec.tables.append(channel_table(stats))
    worker = results[1]
    sec.tables.append(
        Table(
            "Refusals on the device channel",
            ["case", "refused with"],
            [
                [
                    "sender: inconsistent plan, device tensors (before frame 0)",
                    "; ".join(f"{c} {f}" for c, f in results[0].get("sender_refused", [])),
                ],
                [
                    "worker: forged frames of device tensors (after the receive)",
                    "; ".join(f"{c} {f}" for c, f in worker.get("worker_refused", [])),
                ],
                ["worker: the next envelope", json.dumps(worker.get("after_refusal"))],
            ],
        )
    )
    n = len(worker.get("received", []))
    sec.notes.append(
        "Two processes on one machine, both on cuda:0, one gloo group over loopback (gloo "
        "moves a device tensor through host memory; these are not NCCL figures). Cells: "
        "median microseconds per envelope, 10th-90th percentile in brackets, each iteration "
        "timed on both ranks from an untimed barrier to a device synchronize after its side "
        "(send on rank 0; receive, frame 1 check, views and validation on the worker) and "
        "counted as the slower rank's time; "
        f"{CHANNEL_ITERS['small']} small and {CHANNEL_ITERS['scope']} Scope iterations per "
        f"column after {CHANNEL_WARMUP} untimed ones, the columns interleaved. The floor is "
        "one broadcast of exactly the envelope's tensor bytes. The worker compared "
        f"{n} received envelopes with what was sent (tensors bit for bit, on the host) after "
        "each timing, and checked that their tensors lie on the channel's device."
    )
    if problems:
        raise CheckFailed("; ".join(problems[:20]))
    sec.summary = (
        f"{n} envelopes received identical and on the device; Scope envelope "
        f"{us(stats['scope/cuda'][0])} us on the device channel vs "
        f"{us(stats['scope/cpu'][0])} us on a CPU channel (median); both refusals held"
    )


# --- 4. codec on CUDA -------------------------------------------------------------------------


def section_codec(run: Run, sec: Section, timeout: float) -> None:
    codec, note = import_bench("bench.codec")
    from bench import envelopes as E

    if note:
        sec.notes.append(note)
    rows = codec.cuda_rows(KINDS, CODEC_CALLS)
    if rows is None:
        raise CheckFailed("bench.codec.cuda_rows found no CUDA device")
    table = []
    for row in rows:
        kind = E.KINDS[row["kind"]]
        proto = kind.protocol()
        msg = kind.message(proto, 0)
        header = E.header(proto, 1, 0)
        frames = proto.encode(msg, header)
        encode = functools.partial(proto.encode, msg, header)
        row["encode_cpu"] = timed_us(encode, CODEC_CALLS, cuda=False)
        row["decode_cpu"] = timed_us(
            functools.partial(proto.decode, frames), CODEC_CALLS, cuda=False
        )
        row["bytes"] = E.tensor_bytes(msg)
        table.append(
            [
                kind.title,
                f"{row['bytes']:,}",
                cell(row["encode_cpu"]),
                cell(row["encode_device"]),
                cell(row["encode_from_host"]),
                cell(row["decode_cpu"]),
                cell(row["decode_device"]),
            ]
        )
    sec.data = {"rows": rows}
    sec.tables.append(
        Table(
            "",
            [
                "envelope",
                "tensor bytes",
                "encode, CPU tensors",
                "encode, device tensors",
                "encode, host -> device",
                "decode, CPU",
                "decode, device frames",
            ],
            table,
            "lrrrrrr",
        )
    )
    sec.notes.append(
        f"`bench.codec.cuda_rows` ({CODEC_CALLS} calls each, to a device synchronize), beside "
        "the same `encode`/`decode` of CPU tensors in this process. Median microseconds, "
        "10th-90th percentile in brackets. `encode` includes validation and the frame 1 digest "
        "(hashed on the host: see the digest section); `host -> device` is "
        "`encode(host_msg, header, device='cuda')` (one `to(device)` per tensor); `decode` "
        "checks every frame 1 byte against the digest, so device frames are read back too."
    )
    scope = next((r for r in rows if r["kind"] == "scope"), None)
    if scope is not None:
        sec.summary = (
            f"Scope envelope: encode {us(scope['encode_device'][0])} us with device tensors vs "
            f"{us(scope['encode_cpu'][0])} us on CPU; decode {us(scope['decode_device'][0])} vs "
            f"{us(scope['decode_cpu'][0])} us"
        )


# --- 5. the frame 1 digest of device tensors --------------------------------------------------


def _digest(prepared: Any) -> Callable[[], object]:
    from tpwire.runtime import wire

    return functools.partial(wire.frame1_digest, prepared.tensors, prepared.slots, prepared.sizes)


def _d2h(tensors: Sequence[torch.Tensor], pinned: torch.Tensor | None) -> None:
    """The bytes of ``tensors`` to the host: a pageable ``.cpu()`` each, or into ``pinned``
    without blocking (the caller synchronizes)."""
    at = 0
    for t in tensors:
        b = t.reshape(-1).view(torch.uint8)
        if pinned is None:
            b.cpu()
        else:
            pinned[at : at + b.numel()].copy_(b, non_blocking=True)
        at += b.numel()


def section_digest(run: Run, sec: Section, timeout: float) -> None:
    from bench import envelopes as E
    from tpwire.runtime import wire

    dev = torch.device("cuda", torch.cuda.current_device())
    rows = []
    table = []
    for name in ("small", "scope"):
        kind = E.KINDS[name]
        proto = kind.protocol()
        host = kind.message(proto, 0)
        on_dev = E.to_device(host, dev)
        header = E.header(proto, 1, 0)
        p_cpu = proto.prepare(host, header)
        p_dev = proto.prepare(on_dev, header)
        if p_cpu.words != p_dev.words:
            raise CheckFailed(f"{name}: frame 0 (with its digest) differs for device tensors")
        frames_cpu = proto.encode(host, header)
        frames_dev = proto.encode(on_dev, header)
        manifest = proto.read_frame0(frames_cpu.frame0)
        nbytes = sum(p_cpu.sizes)
        tensors = [t for t in p_dev.tensors if t.numel()]
        pinned = torch.empty(
            sum(t.numel() * t.element_size() for t in tensors), dtype=torch.uint8, pin_memory=True
        )
        check = functools.partial(wire.verify_frame1, manifest.slots, manifest.segment_nbytes)
        n = DIGEST_CALLS
        row = {
            "kind": name,
            "frame1_bytes": nbytes,
            "digest_cpu": timed_us(_digest(p_cpu), n, cuda=False),
            "digest_cuda": timed_us(_digest(p_dev), n, cuda=True),
            "d2h_pageable": timed_us(functools.partial(_d2h, tensors, None), n, cuda=True),
            "d2h_pinned": timed_us(functools.partial(_d2h, tensors, pinned), n, cuda=True),
            "check_cpu": timed_us(
                functools.partial(check, frames_cpu.segments, None, manifest.digest), n, cuda=False
            ),
            "check_cuda": timed_us(
                functools.partial(check, frames_dev.segments, None, manifest.digest), n, cuda=True
            ),
        }
        rows.append(row)
        extra = row["digest_cuda"][0] - row["digest_cpu"][0]
        table.append(
            [
                kind.title,
                f"{nbytes:,}",
                cell(row["digest_cpu"]),
                cell(row["digest_cuda"]),
                f"{us(extra)}",
                cell(row["d2h_pageable"]),
                cell(row["d2h_pinned"]),
                cell(row["check_cpu"]),
                cell(row["check_cuda"]),
                f"{gbps(nbytes, row['digest_cpu'][0])} / {gbps(nbytes, row['digest_cuda'][0])}",
            ]
        )
    sec.data = {"rows": rows}
    sec.tables.append(
        Table(
            "",
            [
                "envelope",
                "frame 1 bytes",
                "sender digest, CPU tensors",
                "sender digest, device tensors",
                "device extra (median)",
                "D2H copy alone, pageable",
                "D2H copy alone, pinned",
                "worker check, CPU buffers",
                "worker check, device buffers",
                "digest GB/s, CPU / device",
            ],
            table,
            "lrrrrrrrrr",
        )
    )
    scope = rows[-1]
    sec.notes.append(
        "`runtime/wire.py` hashes frame 1 (xxh3-64) on the host: for a device tensor "
        "`frame1_digest` first copies its bytes to the host (each segment into a reused pinned "
        "staging buffer, then a stream synchronize), on the sender inside `prepare` and on every "
        "worker inside the frame 1 check (`verify_frame1`, which also reads the padding and bool "
        "bytes back). Median "
        f"microseconds of {DIGEST_CALLS} calls, to a device synchronize, 10th-90th percentile in "
        "brackets; the D2H columns are the same bytes copied alone, with a pageable `.cpu()` "
        "each and into one pinned buffer. "
        f"For the Scope envelope ({scope['frame1_bytes']:,} bytes) the sender's digest costs "
        f"{us(scope['digest_cuda'][0])} us with device tensors against "
        f"{us(scope['digest_cpu'][0])} us with CPU tensors, and each worker's check "
        f"{us(scope['check_cuda'][0])} us against {us(scope['check_cpu'][0])} us."
    )
    sec.summary = (
        f"Scope frame 1 digest {us(scope['digest_cuda'][0])} us from device tensors vs "
        f"{us(scope['digest_cpu'][0])} us from CPU tensors (D2H alone "
        f"{us(scope['d2h_pageable'][0])} us pageable, {us(scope['d2h_pinned'][0])} us pinned); "
        "digests identical"
    )


# --- 6. NCCL ----------------------------------------------------------------------------------


def section_nccl(run: Run, sec: Section, timeout: float) -> None:
    gpus = torch.cuda.device_count()
    if gpus < 2:
        sec.status = "skipped"
        sec.summary = f"skipped: {gpus} GPU" + ("" if gpus == 1 else "s")
        sec.notes.append(
            "The NCCL transport tables of `make bench` need a GPU per rank, two at least."
        )
        return
    main, note = import_bench("bench.__main__")
    from bench.transports import BROADCAST_TRANSPORTS, PP_TRANSPORTS, Plan

    if note:
        sec.notes.append(note)
    kinds = KINDS
    plan = Plan(kinds, rounds=2, iters=20, warmup=3, pp=True, backend="nccl", device="cuda")
    stats: dict[str, dict[str, float]] = main.run_world(2, plan, timeout=timeout)
    sec.data = {"world": 2, "stats": stats}
    from bench import envelopes as E

    rows = []
    for kind in kinds:
        row = [E.KINDS[kind].title]
        for t in BROADCAST_TRANSPORTS:
            s = stats.get(f"{kind}/{t}")
            row.append(cell([s["median_us"], s["p10_us"], s["p90_us"]]) if s else "n/a")
        rows.append(row)
    sec.tables.append(
        Table(
            "World size 2, a GPU per rank",
            ["envelope", *BROADCAST_TRANSPORTS],
            rows,
            "l" + "r" * len(BROADCAST_TRANSPORTS),
        )
    )
    pp = [
        [t, cell([s["median_us"], s["p10_us"], s["p90_us"]])]
        for t in PP_TRANSPORTS
        if (s := stats.get(f"pp/{t}"))
    ]
    if pp:
        sec.tables.append(
            Table("PP envelope + result over p2p", ["transport", "latency"], pp, "lr")
        )
    sec.notes.append(
        f"`bench.__main__.run_world(2, Plan(..., backend='nccl', device='cuda'))`: "
        f"{plan.rounds} x {plan.iters} timed iterations per transport after {plan.warmup}, "
        "median microseconds of the slowest rank (10th-90th percentile); see docs/benchmarks.md "
        "for what each transport is."
    )
    tp = stats.get("scope/tpwire")
    floor = stats.get("scope/floor")
    if tp and floor:
        sec.summary = (
            f"world 2: Scope INFER {us(tp['median_us'])} us on tpwire vs "
            f"{us(floor['median_us'])} us floor ({tp['median_us'] / floor['median_us']:.2f}x)"
        )


# --- main ------------------------------------------------------------------------------------

SECTIONS: tuple[tuple[str, str, float, Callable[[Run, Section, float], None]], ...] = (
    ("device", "Device", 60, section_device),
    (
        "pytest-gpu",
        "CUDA tests: tests/test_gpu.py",
        180,
        pytest_section(["tests/test_gpu.py"]),
    ),
    (
        "pytest-wire",
        "CUDA tests: tests/test_wire.py -k cuda",
        90,
        pytest_section(["tests/test_wire.py", "-k", "cuda"]),
    ),
    ("channel", "2-process device channel over gloo, one GPU", 150, section_channel),
    ("codec", "Codec with CUDA tensors", 90, section_codec),
    ("digest", "Frame 1 digest of CUDA tensors", 60, section_digest),
    ("nccl", "NCCL transport tables", 240, section_nccl),
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.gpu_check", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--out", type=Path, default=DEFAULT_REPORT, help="where the report goes")
    ap.add_argument("--budget", type=float, default=300.0, help="overall time budget, seconds")
    ap.add_argument(
        "--only", nargs="+", choices=[key for key, *_ in SECTIONS], help="run these sections only"
    )
    ap.add_argument("--render", type=Path, help="only rewrite the report from a gpu-check.json")
    args = ap.parse_args(argv)
    if args.render is not None:
        args.out.write_text(render(json.loads(args.render.read_text())))
        print(f"gpu-check: wrote {args.out}")
        return 0
    if not torch.cuda.is_available():
        print(NO_CUDA, flush=True)
        if torch.version.cuda is None and shutil.which("nvidia-smi"):
            print(
                f"gpu-check: note: {sys.executable} has torch {torch.__version__}, a CPU build, "
                "on a machine with nvidia-smi; GPU_PY=/path/to/python make gpu-check picks another",
                file=sys.stderr,
                flush=True,
            )
        return 0
    out_env = os.environ.get("OUT")
    out = Path(out_env) if out_env else None
    logs = out / "gpu-check-logs" if out is not None else ROOT / "build" / "gpu-check"
    logs.mkdir(parents=True, exist_ok=True)
    run = Run(budget=args.budget, report=args.out, logs=logs, out=out)
    run.info = machine_info()
    run.sections = [
        Section(key, title, timeout)
        for key, title, timeout, _ in SECTIONS
        if not args.only or key in args.only
    ]
    say(
        run,
        f"{torch.cuda.device_count()} CUDA device(s); budget {run.budget:.0f} s; logs in {logs}",
    )
    threading.Thread(target=_watchdog, args=(run,), daemon=True).start()
    functions = {key: fn for key, _, _, fn in SECTIONS}
    for sec in run.sections:
        run_section(run, sec, functions[sec.key])
    with run.lock:
        run.finished = True
    written = write_report(run)
    result = run.result()
    failed = [s.key for s in run.sections if s.status in ("fail", "not run")]
    say(run, f"overall {overall(result).replace('**', '')}; wrote {', '.join(map(str, written))}")
    if failed:
        say(run, f"failed or not run: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
