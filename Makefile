# idc — one target per stage. Overrides go in ARGS, e.g.
#   make train ARGS="train.epochs=1 data=tiny"
# The first target you run creates .venv and installs the project with its dev extras.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
ARGS   ?=

.PHONY: help install data train evaluate landscape explain visualize sanity leaderboard figures report reproduce test bench clean

help:
	@echo "make train      generate/index data (make data) and train ResNet-18"
	@echo "make evaluate   test-set metrics vs the always-positive baseline, PR curve"
	@echo "make landscape  stitched tissue + probability landscape per patient"
	@echo "make explain    saliency maps (11 methods), figures, raw maps"
	@echo "make visualize  activations, filter patterns, Grad-CAM overlay"
	@echo "make sanity     randomization tests, Table 5.2, localization/faithfulness leaderboard"
	@echo "make leaderboard only the localization/faithfulness scores and the method leaderboard"
	@echo "make figures    every chapter-5 figure by the book's name (runs missing stages)"
	@echo "make report     report.html"
	@echo "make reproduce  every stage from nothing"
	@echo "make test | make bench | make clean"
	@echo "Overrides: make train ARGS=\"data=kaggle data.root=/path/to/IDC_regular_ps50_idx5\""

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

data: $(STAMP)
	$(PY) scripts/prepare_data.py $(ARGS)

train: data
	$(PY) scripts/train.py $(ARGS)

# One target per stage that only needs the venv: `make evaluate` runs scripts/evaluate.py, etc.
STAGES := evaluate landscape explain visualize sanity leaderboard figures report
$(STAGES): $(STAMP)
	$(PY) scripts/$@.py $(ARGS)

# Every stage from nothing (the chapter-10 visualizations are part of explain).
reproduce: train
	for s in evaluate landscape explain sanity figures report; do $(PY) scripts/$$s.py $(ARGS) || exit 1; done

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) -m idc.bench $(ARGS)

clean:
	rm -rf outputs multirun
