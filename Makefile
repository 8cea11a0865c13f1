# Two commands for a new user: `make demo` and `make test`. Both set up .venv/ first.
VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: setup demo test test-fast teacher clean

setup: $(VENV)/.installed

# torch is installed first and pinned: the CPU wheel, never a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $@

demo: setup
	$(BIN)/sdd-ray run configs/demo.yaml --out runs/demo

test: setup
	$(BIN)/pytest -q tests

test-fast: setup
	$(BIN)/pytest -q -m "not slow" tests

teacher: setup
	$(BIN)/python jobs/train_toy_teacher.py --out sdd_ray/toy/teacher

clean:
	rm -rf $(VENV) runs .pytest_cache
