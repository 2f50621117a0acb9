"""Coverage-guided decoder fuzzing with atheris (libFuzzer for Python).

Run by ``python -m fuzz campaign`` (or ``python -m fuzz atheris``) as a subprocess::

    python -m fuzz.atheris_decode [libFuzzer flags] [CORPUS_DIR]

libFuzzer's input bytes drive every choice through ``FdpRandom``: which target, which
seed frames, which mutation operators with which parameters, so coverage feedback from
the instrumented ``tpwire.runtime`` and ``tpwire.generated`` code (and the compiled golden
modules) steers the structure-aware mutators toward new decoder paths. Each input is judged
by the same oracle as every other campaign. Findings are saved as JSON examples (replay
with ``python -m fuzz replay``) and counted; the run goes on unless
``TPWIRE_FUZZ_STOP_ON_FINDING=1``. Tallies are written to ``TPWIRE_FUZZ_STATS`` every
second and when the ``TPWIRE_FUZZ_SECONDS`` budget ends the run.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from types import FunctionType, ModuleType

import atheris

with atheris.instrument_imports(include=["tpwire.runtime", "tpwire.generated"]):
    import tpwire.generated.pp_contract
    import tpwire.generated.tp_control
    import tpwire.runtime.wire  # noqa: F401

from fuzz import campaign, cases, mutators, oracle, targets


class FdpRandom:
    """``fuzz.mutators.Rand`` over a ``FuzzedDataProvider`` (exhausted data reads as zeros)."""

    def __init__(self, fdp: atheris.FuzzedDataProvider) -> None:
        self.fdp = fdp

    def randrange(self, n: int) -> int:
        return 0 if n <= 1 else int(self.fdp.ConsumeIntInRange(0, n - 1))

    def randint(self, a: int, b: int) -> int:
        return a if b <= a else int(self.fdp.ConsumeIntInRange(a, b))

    def random(self) -> float:
        return float(self.fdp.ConsumeProbability())

    def getrandbits(self, k: int) -> int:
        return int(self.fdp.ConsumeUInt((k + 7) // 8)) & ((1 << k) - 1) if k > 0 else 0


def _instrument_module(module: ModuleType) -> None:
    """Instrument the functions of a module compiled in-process (the golden specs)."""
    for name, obj in list(vars(module).items()):
        if isinstance(obj, FunctionType) and obj.__module__ == module.__name__:
            setattr(module, name, atheris.instrument_func(obj))


class Runner:
    def __init__(self) -> None:
        names = os.environ.get("TPWIRE_FUZZ_TARGETS", ",".join(targets.ALL)).split(",")
        self.targets = targets.load_all(names)
        for t in self.targets:
            if t.name.startswith("golden/"):
                _instrument_module(t.module)
        seed = int(os.environ.get("TPWIRE_FUZZ_SEED", "0"))
        self.pools = {t.name: campaign.seed_cases(t, 32, seed) for t in self.targets}
        self.families = os.environ.get("TPWIRE_FUZZ_FAMILIES", ",".join(mutators.FAMILIES))
        self.families_list = [f for f in self.families.split(",") if f]
        self.stats_path = Path(os.environ.get("TPWIRE_FUZZ_STATS", "fuzz/out/atheris-stats.json"))
        self.crash_dir = Path(os.environ.get("TPWIRE_FUZZ_CRASH_DIR", campaign.CRASH_DIR))
        self.stop_on_finding = os.environ.get("TPWIRE_FUZZ_STOP_ON_FINDING") == "1"
        budget = float(os.environ.get("TPWIRE_FUZZ_SECONDS", "0"))
        self.start = time.monotonic()
        self.deadline = self.start + budget if budget > 0 else None
        self.totals = campaign.Totals("atheris")
        self.next_write = 0.0

    def write_stats(self) -> None:
        self.totals.seconds = time.monotonic() - self.start
        self.stats_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.stats_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.totals.as_dict()), "utf-8")
        tmp.replace(self.stats_path)

    def __call__(self, data: bytes) -> None:
        r = FdpRandom(atheris.FuzzedDataProvider(data))
        t = self.targets[r.randrange(len(self.targets))]
        case = mutators.mutate(
            mutators.pick(r, self.pools[t.name]).copy(), t, r, self.families_list
        )
        out = oracle.run_decoder(t, cases.build(case))
        self.totals.record(t.name, out)
        if out.finding:
            campaign.save_example(self.crash_dir, "atheris", t.name, case, out, {})
            if self.stop_on_finding:
                self.write_stats()
                raise RuntimeError(f"{out.finding}: {out.detail}")
        now = time.monotonic()
        if now >= self.next_write:
            self.next_write = now + 1.0
            self.write_stats()
        if self.deadline is not None and now >= self.deadline:
            self.write_stats()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)


def main() -> None:
    runner = Runner()
    atheris.Setup(sys.argv, runner)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
