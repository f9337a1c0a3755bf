# The two commands of the README: `make demo` and `make test`. Each sets up everything first:
# a virtual environment (.venv) with the project and its extras, and the exported ONNX encoder.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.p13n-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test down encoder promtool readme k8s clean

setup: $(STAMP) encoder promtool

# promtool (Debian package prometheus) lints metric names and tests alert rules in the suite. Installed only
# when missing, as root and non-interactively; the package's server is not left running.
promtool:
	@command -v promtool >/dev/null || { \
	  if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	    echo "promtool is missing: install the prometheus package (Debian/Ubuntu: apt-get install prometheus)" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus \
	    && { service prometheus stop >/dev/null 2>&1 || true; }; }

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

clean: down
	rm -rf $(VENV) .p13n
