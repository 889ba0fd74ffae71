# idc — one target per stage. Overrides go in ARGS, e.g.
#   make train ARGS="train.epochs=1 data=tiny"
# The first target you run creates .venv and installs the project with its dev extras.
# Every stage first runs the stages whose outputs it needs when those are missing or out of date
# (same ARGS), and does nothing when its own outputs are up to date; ARGS="run.auto=false" refuses
# instead (see README, "Stages").

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
ARGS   ?=

STAGES := train evaluate landscape explain atlas visualize sanity leaderboard figures report view

.PHONY: help install data $(STAGES) reproduce test bench browser clean

help:
	@echo "make train      generate/index data (make data) and train ResNet-18"
	@echo "make evaluate   test-set metrics vs the always-positive baseline, PR curve"
	@echo "make landscape  stitched tissue + probability landscape per patient"
	@echo "make explain    saliency maps (11 methods), figures, raw maps"
	@echo "make atlas      attribution landscapes: every patch of every test patient (Grad-CAM, IG) stitched into its tissue"
	@echo "make visualize  activations, filter patterns, Grad-CAM overlay"
	@echo "make sanity     model and data randomization tests, Table 5.2"
	@echo "make leaderboard localization and faithfulness scores with controls: which method to use"
	@echo "make figures    every chapter-5 figure by the book's name"
	@echo "make report     report.html (runs every stage it reports on)"
	@echo "make view       viewer/index.html: interactive slide viewer (docs/viewer.md)"
	@echo "make reproduce  every stage from nothing"
	@echo "make test | make bench | make browser (Chromium for the report's browser test) | make clean"
	@echo "Each target runs the stages it needs first (missing or out-of-date outputs); ARGS=\"run.auto=false\" refuses instead."
	@echo "Overrides: make train ARGS=\"data=kaggle data.root=/path/to/IDC_regular_ps50_idx5\""

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) scripts/install_venv.py
	touch $(STAMP)

install: $(STAMP)

# One target per stage: `make evaluate` runs scripts/evaluate.py, which runs what it needs first.
data: $(STAMP)
	$(PY) scripts/prepare_data.py $(ARGS)

$(STAGES): $(STAMP)
	$(PY) scripts/$@.py $(ARGS)

# Every stage from nothing: the report needs all of them (the chapter-10 visualizations are part of explain).
reproduce: report

test: $(STAMP)
	$(PY) -m pytest -q -n 2 tests

bench: $(STAMP)
	$(PY) -m idc.bench $(ARGS)

# Debian's chromium + chromedriver for the report's real-browser test (needs root or sudo; skipped if present).
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then echo "chromium present"; \
	else SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$SUDO apt-get update && \
	DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y --no-install-recommends chromium chromium-driver; fi

clean:
	rm -rf outputs multirun
