# Every target runs in a project virtual environment, `.venv` (created on first use with $(SYSTEM_PYTHON)), so a
# system Python that refuses pip installs (PEP 668, e.g. Debian 12's) works as it is. An active virtual
# environment (VIRTUAL_ENV set) is used instead, and `make PYTHON=/path/to/python ...` uses that interpreter.
SYSTEM_PYTHON ?= python3
ifeq ($(origin PYTHON),undefined)
ifdef VIRTUAL_ENV
PYTHON := $(VIRTUAL_ENV)/bin/python
else
VENV := .venv
PYTHON := $(VENV)/bin/python
endif
endif
# The install stamp: the project's venv is (re)installed when pyproject.toml changes.
INSTALLED := $(if $(VENV),$(VENV)/.installed,)
# What a target needs installed first: the stamp in the project's venv, else a plain `install`.
SETUP := $(if $(VENV),$(INSTALLED),install)
LSLO = $(PYTHON) -m lslo.cli
BASE ?= base/bible12-small
DATA ?= data/bible12
DEMO ?= runs/demo
DEMO_STEPS ?= 500
DEMO_TOKENS ?= 1024
DEMO_SENTENCES ?= 50
DEMO_LANGS ?= en ru sw tl
DEMO_CONFIG ?= configs/bible12-demo.yaml
DEMO_BEAMS ?= 1
DEMO_PRECISION ?= fast
BASE_STEPS ?= 11108
BIBLE12 = en fr it de zh ja ko ru sw tl fa vi

.PHONY: install test mutants lint demo base data bench

# CPU torch first, so the project install does not pull a CUDA build.
install:
ifdef VENV
	@test -x $(PYTHON) || $(SYSTEM_PYTHON) -m venv $(VENV) || { echo "lslo: error: cannot create $(VENV) with $(SYSTEM_PYTHON) (on Debian/Ubuntu: apt install python3-venv); or activate a virtual environment, or pass PYTHON=..."; exit 2; }
endif
	$(PYTHON) -m pip install -q torch==2.13.0
	$(PYTHON) -m pip install -q -e ".[dev]"
ifdef VENV
	@touch $(INSTALLED)
endif

ifdef VENV
$(INSTALLED): pyproject.toml
	$(MAKE) install
endif

test: | $(INSTALLED)
	$(PYTHON) -m ruff check lslo tests benchmarks
	$(PYTHON) -m pytest tests

# Break each tested claim on purpose, one at a time, in a scratch clone of HEAD, and fail if a test suite run
# stays green (benchmarks/mutations.py; ~5 minutes on 2 cores). CI runs it after `make test`.
mutants: | $(INSTALLED)
	$(PYTHON) benchmarks/mutations.py --no-write

data: $(DATA)/manifest.json
$(DATA)/manifest.json: | $(SETUP)
	$(LSLO) data bible --out $(DATA)

# Fine-tune LSLo on the shipped base for 4 of its 12 languages (configs/bible12-demo.yaml: en, ru, sw, tl; 12
# directions; $(DEMO_STEPS) steps of <= $(DEMO_TOKENS) tokens), evaluate those directions on the first
# $(DEMO_SENTENCES) test verses for the base and the LSLo model, and print both tier tables side by side. About
# 8 minutes on 2 CPU cores from a fresh clone (benchmarks/RESULTS.md `demo`); all 132 directions of the 12 languages
# are `configs/bible12-lslo.yaml`'s: the earlier, 19-minute demo is `make demo DEMO_CONFIG=configs/bible12-lslo.yaml
# DEMO_LANGS="$(BIBLE12)" DEMO_STEPS=1000 DEMO_SENTENCES=30`. Greedy decoding (DEMO_BEAMS=1) is 4x cheaper than beam 5.
# Training and both evaluations run under bf16 autocast where the hardware has it (DEMO_PRECISION=fast: GPUs, CPUs
# with AVX512-BF16/AMX, ~1.4x faster there) and in fp32 elsewhere (emulated bf16 is ~27x slower on an AVX2 CPU).
demo: $(SETUP) data
	@test -f $(BASE)/model.safetensors || { echo "lslo: error: $(BASE) is missing; build it with 'make base' (CPU hours)"; exit 2; }
	$(LSLO) train $(DEMO_CONFIG) --resume --set out_dir=$(DEMO)/lslo base_model=$(BASE) data=$(DATA) max_epochs=null max_steps=$(DEMO_STEPS) max_tokens=$(DEMO_TOKENS) valid_max_per_direction=10 precision=$(DEMO_PRECISION)
	$(LSLO) eval $(BASE) --data $(DATA) --languages $(DEMO_LANGS) --max-sentences $(DEMO_SENTENCES) --beams $(DEMO_BEAMS) --precision $(DEMO_PRECISION) --out $(DEMO)/eval-base
	$(LSLO) eval $(DEMO)/lslo --data $(DATA) --languages $(DEMO_LANGS) --max-sentences $(DEMO_SENTENCES) --beams $(DEMO_BEAMS) --precision $(DEMO_PRECISION) --out $(DEMO)/eval-lslo
	$(LSLO) report $(DEMO)/eval-base $(DEMO)/eval-lslo --names base lslo --out $(DEMO)/report.md
	@echo "heatmaps: $(DEMO)/eval-base/heatmap.png $(DEMO)/eval-lslo/heatmap.png"

# Rebuild the shipped base from scratch (what $(BASE)/lslo_base.json's `rebuild` says, in steps): tokenizer +
# a 9.5M-parameter M2M-100-shaped model pretrained on the bible12 `pretrain` split in two stages.
# Stage 1: all 132 directions, temperature 5 (fp32 until step 5269, then bf16 autocast), to step 9710.
# Stage 2: from stage 1's export, proportional sampling (temperature 1), which feeds the high-resource
# directions the most pairs, for BASE_STEPS steps. The hours, tokens and validation curves of both stages are
# in the manifest. Resumable: interrupt it and run it again to continue.
base: $(SETUP) data
	$(LSLO) pretrain --data $(DATA) --out runs/base --steps 5269 --max-tokens 2048 --precision fp32
	$(LSLO) pretrain --data $(DATA) --out runs/base --steps 9710 --max-tokens 2048 --precision bf16 --export-dir runs/base/export
	$(LSLO) pretrain --data $(DATA) --out runs/base-t1 --init-from runs/base/export --steps $(BASE_STEPS) --max-tokens 2048 --temperature 1.0 --warmup-steps 100 --precision bf16 --export-dir $(BASE) --chrf-sentences 20

# The paper's experiment matrix on bible12 (benchmarks/bible12/run.py; RESULTS.md section "bible12"). Resumable:
# run it again to continue where it stopped. Pass options with BENCH_ARGS, e.g. BENCH_ARGS="--only lslo-228".
bench: $(SETUP) data
	$(PYTHON) benchmarks/bible12/run.py --base $(BASE) --data $(DATA) $(BENCH_ARGS)
