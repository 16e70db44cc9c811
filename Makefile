# The two commands of the README: `make demo` and `make test`. Each installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_UPDATED := $(VENV)/.apt-updated

.PHONY: demo test lint unit bench system-deps clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,playground]'
	touch $@

# Debian packages for the real Redis and Prometheus the suite and the demo start on free ports.
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v prometheus >/dev/null 2>&1 || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: system-deps $(VENV)/.installed lint
	$(BIN)/pytest -q

demo: system-deps $(VENV)/.installed
	$(BIN)/meshbot demo

bench: system-deps $(VENV)/.installed
	$(BIN)/python -m bench.ack_latency
	$(BIN)/python -m bench.rollback_time
	$(BIN)/python -m bench.monitor_scale

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .demo
