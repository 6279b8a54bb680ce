VENV ?= .venv
STAMP := $(VENV)/.neuralsim-installed

.PHONY: setup test lint demo clean

$(STAMP): pyproject.toml scripts/setup.sh
	VENV=$(VENV) bash scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(VENV)/bin/ruff check neuralsim tests benchmarks

test: lint
	$(VENV)/bin/python -m pytest -q

demo: setup
	$(VENV)/bin/neuralsim demo

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
