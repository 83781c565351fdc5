PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: test test-fast demo bench gpu-check venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# one pytest worker per core (each on one intra-op thread: tests/conftest.py); a module's tests share a worker
TEST_WORKERS ?= 2
TEST_ARGS = -q -rs -n $(TEST_WORKERS) --dist loadscope

test: venv
	$(PY) -m pytest $(TEST_ARGS) tests

test-fast: venv
	$(PY) -m pytest $(TEST_ARGS) -m "not slow" tests

demo: venv
	$(PY) demo.py

bench: venv
	$(PY) bench/render.py
	$(PY) bench/zeroshot.py
	$(PY) bench/pretrain_step.py
	$(PY) bench/loading.py
	$(PY) bench/fewshot_epoch.py
	$(PY) bench/encoder.py
	$(PY) bench/fps.py
	$(PY) bench/startup.py
	$(PY) bench/search.py

# on a CUDA machine with PyTorch installed: make gpu-check GPU_PYTHON=python3 GPU_CHECK="--wheels DIR"
GPU_PYTHON ?= python3
gpu-check:
	PYTHON="$(GPU_PYTHON)" bash bench/gpu_check.sh $(GPU_CHECK)

clean:
	rm -rf demo_out
