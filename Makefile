# Developers and CI run exactly these targets (.ci/run calls `make test`).
PYTHON ?= python3

.PHONY: setup run test lint types check format bench

setup:
	@bash scripts/setup

run: setup
	@bash scripts/run-demo

test: setup
	$(PYTHON) -m pytest

lint:
	ruff check .
	ruff format --check .

types:
	mypy

check: setup lint types
	$(PYTHON) -m pytest

format:
	ruff format .
	ruff check --fix .

bench: setup
	$(PYTHON) bench/run.py
