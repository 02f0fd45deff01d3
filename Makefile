# bento-compile: the two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export BENTO_COMPILE_HOME ?= $(CURDIR)/.demo/store

.PHONY: setup demo test lint bench bench-serving bench-tail bench-quantize clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

## demo: train the example, compile it, serve it, send one request.
demo: setup
	$(PY) examples/demo.py

## test: the whole suite, real servers included (what CI runs).
test: setup
	$(PY) -m pytest -q

## lint: style (ruff), the layer and no-circle contracts (import-linter), types (mypy).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

## bench: cold start and latency of the Bento vs the same model served the naive way.
bench: setup
	$(PY) bench/bench_foundation.py

## bench-serving: throughput, p99 and cold start vs BentoML (own venv) and a naive FastAPI + ONNX Runtime server.
bench-serving: setup
	$(PY) bench/bench_serving.py $(if $(QUICK),--quick)

## bench-tail: Bento (1 and 2 workers) vs the naive server in alternating rounds, c=1..128: rps, p50/p99/p99.9, server-side breakdown.
bench-tail: setup
	$(PY) bench/bench_tail.py $(if $(QUICK),--rounds 1 --duration 2)

## bench-quantize: size, latency and agreement with the original of each quantization variant.
bench-quantize: setup
	$(PY) bench/bench_quantize.py $(if $(QUICK),--quick)

clean:
	rm -rf .demo bench/.work .pytest_cache
