# The README's two commands: `make demo` and `make test`. Each sets up what it needs, idempotently,
# in a project venv (pinned wheels, sam2 built for CPU, the ROS interfaces built with the ros-* wheels).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST

.PHONY: setup demo test bench clean

setup: $(VENV)/.stamp-interfaces

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.stamp-deps: requirements/ci.txt requirements/ros.txt requirements/sam2.txt setup.py | $(PY)
	$(PIP) install -q -r requirements/ci.txt -r requirements/ros.txt
	SAM2_BUILD_CUDA=0 $(PIP) install -q --no-deps --no-build-isolation -r requirements/sam2.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	touch $@

$(VENV)/.stamp-interfaces: $(VENV)/.stamp-deps scripts/build_interfaces.sh CMakeLists.txt package.xml $(wildcard msg/*.msg srv/*.srv)
	bash scripts/build_interfaces.sh $(VENV)
	touch $@

test: setup
	LMEEC_REQUIRE_ROS=1 $(PY) -m pytest test

demo: setup
	$(VENV)/bin/lmeec_demo

bench: setup
	$(VENV)/bin/lmeec bench --preset nano --frames 300

clean:
	rm -rf $(VENV) build install log out
