PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: test test-fast demo bench venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

test: venv
	$(PY) -m pytest -q -rs tests

test-fast: venv
	$(PY) -m pytest -q -rs -m "not slow" tests

demo: venv
	$(PY) demo.py

bench: venv
	$(PY) bench/render.py
	$(PY) bench/zeroshot.py
	$(PY) bench/pretrain_step.py
	$(PY) bench/loading.py
	$(PY) bench/fewshot_epoch.py
	$(PY) bench/encoder.py

clean:
	rm -rf demo_out
