# The two set-up commands of the README: `make run` and `make test`.
# Both create .venv if missing, install what they need (Python packages, and ffmpeg & co. through
# apt when missing and permitted) and are safe to run again.

# python3.11 if installed under that name, else python3 (checked to be 3.11 below).
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null || echo python3.11)
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q

.PHONY: run test system-deps system-deps-test bench clean-venv

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null || { echo "Echo-Vids needs Python 3.11 ($(PYTHON) is not it); set PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# Re-install when the package description changes.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(PIP) install -e '.[dev]'
	@touch $@

system-deps:
	@scripts/system-deps.sh ffmpeg

system-deps-test:
	@scripts/system-deps.sh ffmpeg sox espeak-ng

run: system-deps $(VENV)/.installed
	@scripts/run.sh

test: system-deps-test $(VENV)/.installed-dev
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
