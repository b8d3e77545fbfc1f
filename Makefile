# The README's commands. `make demo` runs the whole pipeline on the bundled data; `make test` runs the tests.
VENV ?= .venv
PYTHON ?=
# The transformers stack (README: Installing): 4 (4.51.3, every plugin) or 5; empty keeps the installed one.
TRANSFORMERS ?=
PY := $(if $(PYTHON),$(PYTHON),$(VENV)/bin/python)
DEMO_DIR ?= demo_output
PYTEST_ARGS ?=
# Test processes in parallel (pytest-xdist): the suite's two-rank runs spend much of their time starting up or
# waiting on their launchers.
TEST_WORKERS ?= 2

.PHONY: install demo test test-gpu clean

install:
	@VENV=$(VENV) PYTHON=$(PYTHON) TRANSFORMERS=$(TRANSFORMERS) bash scripts/install.sh

demo: install
	$(PY) -m colossal_llama2.demo --output_dir $(DEMO_DIR)

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# On a machine with CUDA GPUs (see README: Development).
test-gpu: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m gpu $(PYTEST_ARGS)

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
