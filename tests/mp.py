"""Run a scenario on several real processes joined by a gloo process group.

Every run has a hard timeout: a rank still alive when it expires is killed and the test
fails with every rank's log, so a hang is a failure, never a stalled CI.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
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
) -> None:
    log = os.open(f"{out}/rank{rank}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.environ.update(env)
    import mp_scenarios
    import torch.distributed as dist

    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=60),
    )
    result = getattr(mp_scenarios, scenario)(rank, world, **kwargs)
    Path(f"{out}/rank{rank}.json").write_text(json.dumps(result))
    os._exit(0)  # skip interpreter teardown of a group whose peers may be gone


def run_ranks(
    scenario: str,
    tmp_path: Path,
    *,
    world: int = 2,
    timeout: float = 60.0,
    env: dict[int, dict[str, str]] | None = None,
    **kwargs: Any,
) -> list[RankResult]:
    ctx = mp.get_context("spawn")
    port = _free_port()
    out = str(tmp_path)
    procs = [
        ctx.Process(
            target=_rank_main,
            args=(scenario, r, world, port, out, (env or {}).get(r, {}), kwargs),
            daemon=True,
        )
        for r in range(world)
    ]
    start = time.monotonic()
    ended: dict[int, float] = {}
    for p in procs:
        p.start()
    while time.monotonic() - start < timeout and len(ended) < world:
        for r, p in enumerate(procs):
            if r not in ended and not p.is_alive():
                ended[r] = time.monotonic() - start
        time.sleep(0.02)
    hung = [r for r, p in enumerate(procs) if p.is_alive()]
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
            )
        )
    if hung:
        logs = "\n".join(f"--- rank {x.rank} (exit {x.exitcode}):\n{x.log}" for x in results)
        raise AssertionError(f"ranks {hung} still running after {timeout} s (a hang):\n{logs}")
    return results
