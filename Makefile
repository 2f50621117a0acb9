# tpwire - two commands do everything on a fresh machine: `make gen` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tpwire-bootstrap
# torch is pinned: 2.13.0 installs the CPU build from the machine's local wheel,
# an unpinned torch would download gigabytes of CUDA packages.
TORCH_PIN := torch==2.13.0

.PHONY: gen test check lint typecheck fresh demo bench profile gpu-check fuzz coverage clean-venv help

help:
	@echo "make gen    - bootstrap .venv, compile spec/ into generated/ and docs/"
	@echo "make test   - run the test suite"
	@echo "make check  - ruff, mypy --strict, freshness of generated output"
	@echo "make demo   - 2 ranks (torchrun, CPU/gloo) stream 20 Scope-sized chunks"
	@echo "make fuzz   - decoder + spec fuzzing campaigns (FUZZ_SECONDS=180); examples in fuzz/crashes/"
	@echo "make coverage - the test suite under coverage (codegen/, runtime/, generated/)"
	@echo "make bench  - transports and codec side by side; writes docs/benchmarks.{md,png}"
	@echo "              (make bench ARGS=--quick: world 2 only, under a minute); compares"
	@echo "              with the last run (ARGS='--against FILE'; --strict: exit 1 if slower)"
	@echo "make profile - py-spy on both ranks of a tpwire stream: where the CPU path goes"
	@echo "              (make profile ARGS='--kind scope --seconds 8')"
	@echo "make gpu-check - on a CUDA machine: CUDA materialization tests, a 2-process device"
	@echo "              channel, codec and digest timings, NCCL tables (2+ GPUs); writes"
	@echo "              docs/benchmarks-gpu.md (and to \$$OUT when set); without CUDA it says so, exit 0"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH_PIN)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# [tool.tpwire] in pyproject.toml says what (spec/*.yaml -> generated/, docs/spec/); the
# out-of-tree example is a project of its own with its own [tool.tpwire]
# first the data the checker reads off the templates (codegen/reserved_names.py) and the
# error-code table of docs/spec-language.md (tools/codes_doc.py)
gen: $(STAMP)
	$(PY) -m tpwire.codegen.reserved_probe
	$(PY) -m tools.codes_doc
	$(PY) -m tpwire gen
	cd examples/preview_protocol && ../../$(PY) -m tpwire gen

# two pytest workers (pytest-xdist): most tests wait on processes they spawned, so the
# suite takes about 7 minutes on 2 cores instead of 10; TEST_WORKERS=0 runs it in one process
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(STAMP)
	$(PY) -m tools.pkgtree --mypy -p tpwire -p bench -p tools

# what `make gen` writes: CI runs gen before check and test, so only this gate sees a stale
# committed copy (tests/test_stage_imports.py reads the regenerated reserved_names.py)
GEN_OUTPUT := generated docs examples codegen/reserved_names.py
fresh: gen
	@git add -N $(GEN_OUTPUT) >/dev/null 2>&1 || true
	@if [ -n "$$(git status --porcelain -- $(GEN_OUTPUT))" ]; then \
		echo "error: 'make gen' changed $(GEN_OUTPUT); commit the regenerated output:"; \
		git status --short -- $(GEN_OUTPUT); exit 1; \
	fi

check: lint typecheck fresh

demo: $(STAMP)
	$(PY) -m torch.distributed.run --standalone --nproc-per-node 2 examples/scope_stream.py --chunks 20

BENCH_STAMP := $(VENV)/.tpwire-bench
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) -m bench $(ARGS)

profile: $(BENCH_STAMP)
	$(PY) -m bench.profile $(ARGS)

# The one-shot GPU check (bench/gpu_check.py). No .venv needed (a GPU machine's own python3
# with CUDA torch, numpy, pytest, pytest-timeout, hypothesis, xxhash, jinja2, pyyaml will do,
# offline): the package is laid out in build/pkgtree (tools/pkgtree.py, copies of the
# mapped folders) and put on PYTHONPATH. GPU_PY picks another interpreter (the .venv of
# `make gen` holds the CPU build of torch).
GPU_PY ?= $(if $(wildcard $(PY)),$(PY),$(PYTHON))
gpu-check:
	$(GPU_PY) -m tools.pkgtree build/pkgtree >/dev/null
	PYTHONPATH=build/pkgtree$(if $(PYTHONPATH),:$(PYTHONPATH)) $(GPU_PY) -m bench.gpu_check $(ARGS)

# Long fuzzing campaigns (fuzz/README.md): random + coverage-guided (atheris) decoder
# mutation, then mutated specs; prints the totals, exits 1 on any finding.
FUZZ_SECONDS ?= 180
FUZZ_ARGS ?=
fuzz: $(STAMP)
	$(PY) -m fuzz campaign --seconds $(FUZZ_SECONDS) $(FUZZ_ARGS)
	$(PY) -m fuzz.breaking --seconds $$(( $(FUZZ_SECONDS) / 3 ))

coverage: $(STAMP)
	@mkdir -p fuzz/out
	$(PY) -m pytest --cov --cov-config=fuzz/coveragerc --cov-report=term \
		--cov-report=json:fuzz/out/coverage.json
	$(PY) -m fuzz.coverage_report fuzz/out/coverage.json

clean-venv:
	rm -rf $(VENV)
