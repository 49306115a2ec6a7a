# Two commands on a fresh clone: `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# The project's local mirror of data and weights (../shared), when it exists.
export IDLSEC_MIRROR ?= $(if $(wildcard ../shared/models),$(abspath ../shared),)

.PHONY: demo test system-deps install lint wheel-check docs docs-build benchmarks-md clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e '.[dev,lab]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/idlsec attack --model cifar10-resnet20 --dataset cifar10 --interpreter cam \
	    --attack advedge --n 8 --seed 0 --out runs/demo
	$(VENV)/bin/idlsec report runs/demo

# First the system packages the tests need (installed as root, else the exact command and a stop).
system-deps:
	bash scripts/ensure-system-deps.sh

test: system-deps $(VENV)/.installed
	IDLSEC_OFFLINE=1 IDLSEC_TEST_INDUCTOR=1 $(PY) -m pytest -n 2
	bash web/scripts/ci.sh

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests

# The wheel `python -m build` gives: complete, installs in a clean venv, runs (--full: real install).
wheel-check: $(VENV)/.installed
	VENV=$(VENV) bash scripts/check-wheel.sh

# The docs site (MkDocs Material + mkdocstrings) in its own venv, .venv-docs.
docs:
	bash scripts/docs.sh serve

docs-build:
	bash scripts/docs.sh build --strict

benchmarks-md: $(VENV)/.installed
	$(PY) benchmarks/make_benchmarks_md.py

clean:
	rm -rf $(VENV) .venv-docs site runs
