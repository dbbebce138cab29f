# restock: all set-up happens here, so `make demo` and `make test` work on a fresh machine.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.restock-installed
PYTEST_ARGS ?=

.PHONY: install demo test test-heavy lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	# Prefer a CPU build of torch: the one on this machine's disk (torch==2.13.0), else PyTorch's CPU index,
	# else whatever pip resolves. Installing torch first stops the extras below pulling a CUDA build.
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q torch==2.13.0 \
	  || $(PIP) install -q --index-url https://download.pytorch.org/whl/cpu "torch>=2.8" \
	  || $(PIP) install -q "torch>=2.8"
	$(PIP) install -q -e ".[all]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/restock demo

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-heavy: $(STAMP)
	$(PY) -m pytest -q -m heavy $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(STAMP)
	$(VENV)/bin/restock bench --json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
