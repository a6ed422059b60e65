# Every target builds its own virtualenv from pyproject.toml; nothing installed by hand is used.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install sandbox-tools test-tools demo demo-live test lint run clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# $(call apt_tool,command,Debian package,what happens without it): installed when we can (root
# with apt), optional otherwise.
define apt_tool
@command -v $(1) >/dev/null 2>&1 || { \
  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
    (apt-get install -y -qq $(2) >/dev/null 2>&1 || \
     (apt-get update -qq >/dev/null 2>&1 && \
      apt-get install -y -qq $(2) >/dev/null 2>&1)) \
    && echo "installed $(2)" || echo "$(2) not installed: $(3)"; \
  else echo "$(2) not available: $(3)"; fi; }
endef

# bubblewrap isolates strategy code.
sandbox-tools:
	$(call apt_tool,bwrap,bubblewrap,the sandbox uses rlimits only)

# What some tests need beyond the sandbox: Chromium for the admin's browser test, promtool
# (Debian's prometheus) to check the alert rules; each test skips with the reason without.
test-tools:
	$(call apt_tool,chromium,chromium,the admin browser test skips)
	$(call apt_tool,promtool,prometheus,the alert rules check skips)

demo: install sandbox-tools
	$(BIN)/python manage.py demo

# Live subscribers trading through ccxt against the local exchange simulator, with faults.
demo-live: install sandbox-tools
	$(BIN)/python manage.py demo_live

# Two test processes (pytest-xdist), a file each at a time: most tests wait on workers,
# sandboxes and sockets, so two share two cores well. TEST_PROCESSES=0 runs them in one.
TEST_PROCESSES ?= 2
test: install sandbox-tools test-tools
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
