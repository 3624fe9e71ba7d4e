# Everything a fresh machine needs: `make demo` and `make test` build .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test check lint typecheck bench clean services compat

venv: $(STAMP)

$(STAMP): pyproject.toml setup.py $(wildcard amber/security/*.c amber/artifact/*.c amber/handlers/*.c)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev,bench,frameworks]"
	touch $(STAMP)

demo: venv
	$(BIN)/python examples/demo.py

lint: venv
	$(BIN)/ruff check amber tests benchmarks tools examples
	$(BIN)/ruff format --check amber tests benchmarks tools examples

typecheck: venv
	$(BIN)/mypy amber

check: lint typecheck

# venv, check, services and the main suite, with the compat runs beside them (tools/test.sh;
# not through $(MAKE), which would make `make -n test` run it)
test:
	bash tools/test.sh

# The scikit-learn round trips under older numpy/scipy/scikit-learn releases (side environments
# in .venv-compat/), and each release's allowlist file up to date.
compat: venv
	bash tools/compat.sh

# PostgreSQL (Debian package) for the registry tests, which start their own servers.
services:
	bash scripts/test-services.sh

bench: venv
	$(BIN)/python benchmarks/persist.py

clean:
	rm -rf $(VENV) .venv-compat build *.egg-info amber/security/*.so amber/artifact/*.so amber/handlers/*.so
