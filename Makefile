# AIDC Hub. The two commands: `make up` (run the hub here) and `make test` (every test tier).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# The venv's interpreter: the system's where there is one, since the workspaces run it as each
# person's own Unix account (an interpreter under /root, pyenv's for one, is closed to them)
PYTHON ?= $(firstword $(wildcard /usr/bin/python3) python3)
export AIDC_FAKE_GPUS ?= H100:6,A100:2

.PHONY: up test setup host lint lock bench bench-k8s bench-scale images clean i18n

# Exactly the locked versions, with hashes (requirements/dev.txt; `make lock` writes it), then this
# package itself without dependencies or build isolation (setuptools and wheel come from the lock).
$(VENV)/.installed: requirements/dev.txt setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r requirements/dev.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The workspaces' JupyterLab extension (labextension/): npm ci on its own lock, the TypeScript compiled
# and bundled by @jupyter/builder (JupyterLab's, through the venv's jupyter-builder), then installed
# into the venv, where the embedded mode's workspaces run; images/base/Dockerfile installs the same build.
LABEXT := labextension
LABEXT_SOURCES := $(wildcard $(LABEXT)/src/*.ts $(LABEXT)/style/* $(LABEXT)/aidc_jupyterlab/*.py) \
	$(LABEXT)/tsconfig.json $(LABEXT)/pyproject.toml $(LABEXT)/jupyter-config/aidc_jupyterlab.json
$(LABEXT)/node_modules/.installed: $(LABEXT)/package.json $(LABEXT)/package-lock.json
	cd $(LABEXT) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(VENV)/.labextension: $(VENV)/.installed $(LABEXT)/node_modules/.installed $(LABEXT)/package.json $(LABEXT_SOURCES)
	rm -rf $(LABEXT)/lib $(LABEXT)/aidc_jupyterlab/labextension $(LABEXT)/build
	cd $(LABEXT) && node_modules/.bin/tsc && PATH="$(abspath $(VENV))/bin:$$PATH" jupyter-builder build .
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation --force-reinstall ./$(LABEXT)
	touch $@

setup: $(VENV)/.installed node_modules/.installed $(VENV)/.labextension host

# What the embedded mode needs of the machine that a stock Debian host has already: terminals of
# group tty (devpts gid=5), without which the workspaces' own unprivileged sshd cannot open a pty
host:
	@if [ "$$(id -u)" = 0 ] && ! grep -qE '^devpts /dev/pts devpts [^ ]*gid=5' /proc/mounts; then \
		echo "remounting /dev/pts with gid=5,mode=620 (terminals of group tty, as Debian mounts it)"; \
		mount -o remount,gid=5,mode=620 /dev/pts; fi

## make up: set everything up and run the hub at http://127.0.0.1:8000 (embedded mode)
up: setup
	$(VENV)/bin/aidc init
	exec $(VENV)/bin/jupyterhub -f hub_config/jupyterhub_config.py

## make test: set everything up and run every tier (unit, hub, browser, k8s, chart, postgres, ssh, images)
test: setup
	bash tests/bed/debian-packages.sh chromium openssl postgresql-15 openssh-client openssh-server rsync podman buildah mmdebstrap runc prometheus
	bash tests/bed/controlplane/build.sh
	bash tests/bed/dex/build.sh
	bash tests/bed/helm/build.sh
	bash tests/bed/kueue/build.sh
	$(VENV)/bin/ruff check i18n quotas spawner authenticators sshgateway services aidc hub_config tests benchmarks requirements/lock labextension/aidc_jupyterlab
	$(VENV)/bin/mypy
	$(PY) -m pytest tests -ra -p no:cacheprovider

## make i18n: extract every sentence for people (Babel), update the catalogs (i18n/locale/), check them
i18n: $(VENV)/.installed
	$(PY) -m i18n.catalogs update
	$(PY) -m i18n.bypass

lint: setup
	$(VENV)/bin/ruff check i18n quotas spawner authenticators sshgateway services aidc hub_config tests benchmarks requirements/lock labextension/aidc_jupyterlab
	$(VENV)/bin/mypy

## make lock: rewrite the lock files from setup.cfg and images/*/requirements.in (requirements/lock)
## ARGS=--upgrade for the newest versions the ranges allow, ARGS="--upgrade-package NAME" for one
lock: setup
	$(PY) requirements/lock $(ARGS)

bench: setup
	$(PY) -P benchmarks/admission.py --write benchmarks/README.md
	$(PY) -P benchmarks/quotas.py --write benchmarks/README.md
	$(PY) -P benchmarks/ssh.py --write benchmarks/README.md

## make bench-k8s: the benchmarks on the test control plane and Kueue (about 45 minutes)
bench-k8s: setup
	bash tests/bed/controlplane/build.sh
	bash tests/bed/kueue/build.sh
	$(PY) -P benchmarks/spawn_k8s.py --homes new,existing --rounds 2 --write benchmarks/README.md
	$(PY) -P benchmarks/spawn_k8s.py --users 1000 --homes existing --timeout 900 --write benchmarks/README.md
	$(PY) -P benchmarks/sharing.py --write benchmarks/README.md

## make bench-scale: one hub at data-center size on KWOK, at 1/10, 1/3 and all of 1,000 GPU nodes,
## 500 tenants, 10,000 users, 3,000 running servers (about 25 minutes; docs/scale.md)
bench-scale: setup
	bash tests/bed/controlplane/build.sh
	$(PY) -P benchmarks/scale.py --rest-small 180 --write benchmarks/README.md

## make images: build every image of images/catalog.yaml with podman here (the framework images
## download several GB: not in CI), check the workspace images in containers (images/check) and
## record sizes, build times and results in docs/images.md
images: setup
	bash tests/bed/debian-packages.sh podman buildah mmdebstrap runc
	$(PY) -P benchmarks/images.py --write docs/images.md

clean:
	rm -rf $(VENV) node_modules test-artifacts $(LABEXT)/node_modules $(LABEXT)/lib $(LABEXT)/aidc_jupyterlab/labextension $(LABEXT)/build
