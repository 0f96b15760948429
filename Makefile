# Two commands do all set-up: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Where requirements-ros.txt's markers install the ROS 2 wheels (CPython 3.11, x86_64 Linux), a ROS test
# that skips fails `make test` (test/conftest.py); elsewhere the ROS tests skip. .ci/run sets it to 1.
OPENSET_REQUIRE_ROS ?= $(shell $(PY) -c 'import platform, sys; print(int(sys.version_info[:2] == (3, 11) \
	and platform.machine() == "x86_64" and sys.platform == "linux"))')

.PHONY: install demo test lint benchmark clean

$(STAMP): requirements.txt requirements-dev.txt requirements-ros.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -r requirements-ros.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/openset-perception demo --out demo_output

test: $(STAMP) lint
	OPENSET_REQUIRE_ROS=$(OPENSET_REQUIRE_ROS) $(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

benchmark: $(STAMP)
	$(VENV)/bin/openset-perception benchmark

clean:
	rm -rf $(VENV) demo_output build install log
