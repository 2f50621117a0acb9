"""Run a scenario on several real processes joined by a gloo process group.

Every run has a hard timeout: a rank still alive when it expires is killed and the test
fails with every rank's log, so a hang is a failure, never a stalled CI.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any


@dataclass
class RankResult:
    rank: int
    exitcode: int | None
    log: str
    result: Any
    seconds: float
    #: ``time.monotonic()`` when the harness saw the rank end (None: it never did)
    ended_at: float | None = None


#: runs may share a test process (threads): ``Process.start`` polls every child of the
#: process, and two threads reading one child's exit status race (one of them can read a
#: forkserver child's code as 255, or a spawned child as never ending)
_PROCS = threading.Lock()

_PRELOAD = [
    "torch",
    "torch.distributed",
    "tpwire.runtime.channel",
    "tpwire.runtime.lockstep",
    "tpwire.generated.tp_control",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _rank_main(
    scenario: str,
    rank: int,
    world: int,
    port: int,
    out: str,
    env: dict[str, str],
    kwargs: dict[str, Any],
    module: str = "mp_scenarios",
) -> None:
    log = os.open(f"{out}/rank{rank}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.environ.update(env)
    import importlib

    import torch.distributed as dist

    scenarios = importlib.import_module(module)

    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=60),
    )
    result = getattr(scenarios, scenario)(rank, world, **kwargs)
    Path(f"{out}/rank{rank}.json").write_text(json.dumps(result))
    os._exit(0)  # skip interpreter teardown of a group whose peers may be gone


def run_ranks(
    scenario: str,
    tmp_path: Path,
    *,
    world: int = 2,
    timeout: float = 60.0,
    env: dict[int, dict[str, str]] | None = None,
    module: str = "mp_scenarios",
    stopped: set[int] | frozenset[int] = frozenset(),
    start_method: str = "spawn",
    raise_on_hang: bool = True,
    **kwargs: Any,
) -> list[RankResult]:
    """Run ``module.scenario(rank, world, **kwargs)`` on ``world`` processes.

    ``stopped``: ranks expected to stop themselves (SIGSTOP) and never exit: the wait ends
    when every other rank has ended; the stopped ones are then killed, not counted as hung.
    ``start_method="forkserver"``: ranks fork from a server that imported torch and the
    runtime once, instead of each importing them: for suites of many short runs.
    ``raise_on_hang=False``: return the results of a run that hung too (a hung rank has no
    ``ended_at``; it was killed at the timeout), for tests that report hangs themselves.
    """
    ctx: Any = mp.get_context(start_method)  # typeshed: only a literal name gives Process
    if start_method == "forkserver":
        # read when the server starts (once per test process). Only what is importable
        # without tests/ on the path: Python 3.11's server ignores the parent's sys.path
        ctx.set_forkserver_preload(_PRELOAD)
    port = _free_port()
    out = str(tmp_path)
    procs = [
        ctx.Process(
            target=_rank_main,
            args=(scenario, r, world, port, out, (env or {}).get(r, {}), kwargs, module),
            daemon=True,
        )
        for r in range(world)
    ]
    start = time.monotonic()
    ended: dict[int, float] = {}
    awaited = {r for r in range(world) if r not in stopped}
    with _PROCS:
        for p in procs:
            p.start()
    while time.monotonic() - start < timeout and not awaited <= ended.keys():
        with _PROCS:
            for r, p in enumerate(procs):
                if r not in ended and not p.is_alive():
                    ended[r] = time.monotonic() - start
        time.sleep(0.02)
    with _PROCS:
        hung = [r for r, p in enumerate(procs) if p.is_alive() and r not in stopped]
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join(5)
    results = []
    for r, p in enumerate(procs):
        log_file = tmp_path / f"rank{r}.log"
        res_file = tmp_path / f"rank{r}.json"
        results.append(
            RankResult(
                r,
                p.exitcode,
                log_file.read_text(errors="replace") if log_file.exists() else "",
                json.loads(res_file.read_text()) if res_file.exists() else None,
                ended.get(r, timeout),
                start + ended[r] if r in ended else None,
            )
        )
    if hung and raise_on_hang:
        logs = "\n".join(f"--- rank {x.rank} (exit {x.exitcode}):\n{x.log}" for x in results)
        raise AssertionError(f"ranks {hung} still running after {timeout} s (a hang):\n{logs}")
    return results
