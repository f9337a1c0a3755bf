# The two commands of the README: `make demo` and `make test`. Each sets up everything first:
# a virtual environment (.venv) with the project and its extras, and the exported ONNX encoder.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.p13n-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test down encoder promtool chromium readme k8s dashboard clean

setup: $(STAMP) encoder promtool chromium

# apt-get waits up to 10 minutes for a dpkg lock another apt holds (e.g. unattended upgrades) instead of failing
APT := DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600

# promtool (Debian package prometheus) lints metric names and tests alert rules in the suite. Installed only
# when missing, as root and non-interactively; the package's server is not left running.
promtool:
	@command -v promtool >/dev/null || { \
	  if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	    echo "promtool is missing: install the prometheus package (Debian/Ubuntu: apt-get install prometheus)" >&2; exit 1; fi; \
	  $(APT) update -qq && $(APT) install -y -qq --no-install-recommends prometheus \
	    && { service prometheus stop >/dev/null 2>&1 || true; }; }

# Headless Chromium and its WebDriver (Debian packages chromium, chromium-driver) for the profile inspector's
# browser test (tests/serving/test_inspector.py). Installed only when missing, as root and non-interactively.
chromium:
	@{ command -v chromium >/dev/null && command -v chromedriver >/dev/null; } || { \
	  if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	    echo "chromium or chromedriver is missing: install them (Debian/Ubuntu: apt-get install chromium chromium-driver)" >&2; exit 1; fi; \
	  $(APT) update -qq && $(APT) install -y -qq --no-install-recommends chromium chromium-driver; }

# torch first, pinned: it is the CPU build this machine keeps on disk; an unpinned torch
# pulled in by sentence-transformers would be a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[embedded,export,dev,bench]'
	touch $(STAMP)

encoder: $(STAMP)
	$(BIN)/p13n encoder export --if-missing

demo: setup
	$(BIN)/p13n demo

test: setup
	$(BIN)/python -m pytest

down:
	$(BIN)/p13n dev down

readme: $(STAMP)
	$(BIN)/python -m p13n.readme

# copy serving/serve_config.yaml into the RayService (kustomize cannot inline a file), then render both overlays
k8s: $(STAMP)
	$(BIN)/python -m p13n.k8s
	kubectl kustomize k8s/overlays/dev > /dev/null && kubectl kustomize k8s/overlays/prod > /dev/null

# regenerate the Grafana dashboard (k8s/components/grafana-dashboard/p13n-dashboard.json) with grafana-foundation-sdk
dashboard: $(STAMP)
	$(BIN)/python -m p13n.dashboard

clean: down
	rm -rf $(VENV) .p13n
