# Every target builds its own virtualenv from pyproject.toml; nothing installed by hand is used.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install sandbox-tools browser demo demo-live test lint run clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# bubblewrap isolates strategy code; installed when we can (root with apt), optional otherwise.
# Chromium runs the admin's browser test (skipped without it), installed the same way.
sandbox-tools: browser
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -qq bubblewrap >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq bubblewrap >/dev/null 2>&1)) \
	    && echo "installed bubblewrap" || echo "bubblewrap not installed: sandbox uses rlimits only"; \
	  else echo "bubblewrap not available: sandbox uses rlimits only"; fi; }

browser:
	@command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || { \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -qq chromium >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1)) \
	    && echo "installed chromium" || echo "chromium not installed: the admin browser test skips"; \
	  else echo "chromium not available: the admin browser test skips"; fi; }

demo: install sandbox-tools
	$(BIN)/python manage.py demo

# Live subscribers trading through ccxt against the local exchange simulator, with faults.
demo-live: install sandbox-tools
	$(BIN)/python manage.py demo_live

# Two test processes (pytest-xdist), a file each at a time: most tests wait on workers,
# sandboxes and sockets, so two share two cores well. TEST_PROCESSES=0 runs them in one.
TEST_PROCESSES ?= 2
test: install sandbox-tools
	$(BIN)/python -m pytest -n $(TEST_PROCESSES) --dist loadfile

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

# The web process listens on loopback only (DEBUG is on under config.settings.local): pass
# e.g. BIND=0.0.0.0:8000 to serve the network on purpose.
BIND ?= 127.0.0.1:8000
run: install sandbox-tools
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py rebuild_registry
	rm -rf .var/metrics  # every process of the stack counts from zero (Prometheus multiprocess)
	BIND='$(BIND)' $(BIN)/honcho start -f Procfile

clean:
	rm -rf $(VENV) .var
