# The two commands of the README: `make demo` and `make test`. Each installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_UPDATED := $(VENV)/.apt-updated

.PHONY: demo test lint unit bench system-deps clean apiserver

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,playground]'
	touch $@

# Debian packages for the real Redis and Prometheus the suite and the demo start on free ports,
# and the chromium (with a colour emoji font) the playground page's browser tests drive.
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v prometheus >/dev/null 2>&1 || missing="$$missing prometheus"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	[ -e /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || missing="$$missing fonts-noto-color-emoji"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# The real kube-apiserver (k8s.io/kubernetes with its staging modules pinned, on an embedded etcd)
# that tests/fixtures/apiserver.py starts on loopback. Built once into .cache/, rebuilt only when
# its Go sources change.
GO                 ?= $(firstword $(shell command -v go 2>/dev/null) $(wildcard /usr/local/go/bin/go))
KUBE_APISERVER_SRC := tests/kube_apiserver
KUBE_APISERVER     := .cache/kube-apiserver/meshbot-kube-apiserver

apiserver: $(KUBE_APISERVER)

$(KUBE_APISERVER): $(KUBE_APISERVER_SRC)/go.mod $(KUBE_APISERVER_SRC)/go.sum $(wildcard $(KUBE_APISERVER_SRC)/*.go)
	@if [ -z "$(GO)" ] || ! "$(GO)" version >/dev/null 2>&1; then \
	  echo "error: Go not found; building the test kube-apiserver needs Go >= 1.26." >&2; \
	  echo "Install Go (e.g. into /usr/local/go) or a Debian package that ships >= 1.26" >&2; \
	  echo "(golang-1.26-go / golang-go), then put it on PATH" >&2; \
	  echo "or run: make apiserver GO=/path/to/go" >&2; exit 1; fi
	@v=$$(GOTOOLCHAIN=local "$(GO)" env GOVERSION | sed 's/^go//'); \
	if [ "$$(printf '%s\n' 1.26 "$$v" | sort -V | head -n1)" != 1.26 ]; then \
	  echo "error: $(GO) is Go $$v; building kube-apiserver needs Go >= 1.26" >&2; \
	  exit 1; fi
	@mkdir -p $(@D)
	@echo "building $@ (kube-apiserver + etcd; a cold build takes several minutes)"
	@start=$$(date +%s); \
	cd $(KUBE_APISERVER_SRC) && \
	kv=$$(GOTOOLCHAIN=local GOFLAGS=-mod=mod "$(GO)" list -m -f '{{.Version}}' k8s.io/kubernetes) && \
	kmaj=$$(echo "$$kv" | sed 's/^v\([0-9]*\)\..*/\1/') && kmin=$$(echo "$$kv" | sed 's/^v[0-9]*\.\([0-9]*\)\..*/\1/') && \
	GOTOOLCHAIN=local GOFLAGS=-mod=mod "$(GO)" build -trimpath -o $(abspath $@).tmp \
	  -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$$kv \
	    -X k8s.io/component-base/version.gitMajor=$$kmaj -X k8s.io/component-base/version.gitMinor=$$kmin \
	    -X k8s.io/component-base/version.gitTreeState=clean" . && \
	mv -f $(abspath $@).tmp $(abspath $@) && \
	echo "built $@ ($$kv) in $$(( $$(date +%s) - start ))s"

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Two pytest workers (pytest-xdist): most of the suite waits on real processes (Redis,
# Prometheus, the kube-apiserver, meshbot's own), so two keep two cores busy; each worker starts
# its own stand-ins on free ports. `make test PYTEST_WORKERS=0` runs it in one process.
PYTEST_WORKERS ?= 2
test: system-deps $(VENV)/.installed lint $(KUBE_APISERVER)
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadgroup --durations=25

# `make demo`: the playground as a page on loopback (until Ctrl-C); `make demo SCRIPT=1`: the
# scripted session printed in the terminal (what CI runs).
demo: system-deps $(VENV)/.installed
	$(BIN)/meshbot demo $(if $(SCRIPT),--script)

bench: system-deps $(VENV)/.installed
	$(BIN)/python -m bench.ack_latency
	$(BIN)/python -m bench.rollback_time
	$(BIN)/python -m bench.monitor_scale

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .demo
