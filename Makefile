VENV ?= .venv
STAMP := $(VENV)/.neuralsim-installed

.PHONY: setup test test-fast lint demo clean

$(STAMP): pyproject.toml scripts/setup.sh
	VENV=$(VENV) bash scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(VENV)/bin/ruff check neuralsim tests benchmarks

test: lint
	$(VENV)/bin/python -m pytest -q

test-fast: setup  # for development: everything but the tests marked slow
	$(VENV)/bin/python -m pytest -q -m "not slow"

demo: setup
	$(VENV)/bin/neuralsim demo

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
