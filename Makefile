# One-command set-up: each target creates .venv when missing and installs the project into it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

export RAY_USAGE_STATS_ENABLED := 0
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: install sweep test train analysis clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	# torch/torchvision pinned to the wheels this machine carries (CUDA build, also runs on CPU);
	# pip only installs them when they are missing.
	$(BIN)/pip install -q "torch==2.14.1" "torchvision==0.29.1" || $(BIN)/pip install -q torch torchvision
	$(BIN)/pip install -q -e ".[test]"
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

sweep: $(STAMP)
	$(BIN)/python sweeps/grid.py $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

train: $(STAMP)
	$(BIN)/python -m clnscl.train $(ARGS)

analysis: $(STAMP)
	$(BIN)/python -m analysis $(ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
