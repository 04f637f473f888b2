# The two set-up commands (README): `make serve` and `make test`.
# Both create or reuse .venv and install the pinned stack from requirements/ first.

PYTHON ?= python3.11
VENV ?= .venv
PORT ?= 3000
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SYSTEM_PACKAGES := ffmpeg redis-server chromium chromium-driver

.PHONY: install serve test lint system-deps bench lock clean parity

$(STAMP): requirements/lock.txt requirements/dev.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements/pip.txt
	$(PY) -m pip install --quiet -r requirements/lock.txt -r requirements/dev.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

install: $(STAMP)

# Serve the demo models (imported into the BentoML store the first time) on port $(PORT): the
# Stable Audio Open demo ("demo", the default) and the Stable Audio 3 one ("demo-sa3").
serve: $(STAMP)
	@$(PY) -m models list | grep -q '^stable-audio-demo:' || $(PY) -m models import demo
	@$(PY) -m models list | grep -q '^stable-audio-3-demo:' || $(PY) -m models import demo-sa3
	BENTOML_DO_NOT_TRACK=True $(VENV)/bin/bentoml serve . --port $(PORT)

# What the tests start for real: ffprobe, redis-server, a headless Chromium.
system-deps:
	@missing=""; \
	for bin in ffprobe redis-server chromium chromedriver; do \
		command -v $$bin >/dev/null || missing=yes; \
	done; \
	if [ -n "$$missing" ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
			$(SYSTEM_PACKAGES) >/dev/null; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: $(STAMP) system-deps lint
	BENTOML_DO_NOT_TRACK=True $(PY) -m pytest

bench: $(STAMP)
	$(PY) -m bench

# SA3 parity: tiny SA3 models built with the reference stable-audio-tools 0.0.20 (Python 3.10
# only, its own venv) against our import + diffusers, component by component (parity/results.json,
# tests/data/sa3_key_manifest.json), then end to end (parity/e2e_results.json).
PARITY_PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.10*/bin/python3.10) python3.10)
PARITY_VENV ?= .venv-parity
PARITY_OUT ?= test-artifacts/parity

$(PARITY_VENV)/.installed: parity/requirements.txt
	@test -x $(PARITY_VENV)/bin/python || $(PARITY_PYTHON) -m venv $(PARITY_VENV)
	$(PARITY_VENV)/bin/pip install --quiet --disable-pip-version-check -r parity/requirements.txt
	@touch $@

# End to end: the reference package's own generate() (Stability-AI/stable-audio-3, not on
# PyPI: a checkout of this commit; set SA3_REFERENCE_SRC to use one you have) against our
# engine on tiny models of the released structure, imported from the released layout.
SA3_REFERENCE_COMMIT ?= 636f906fc0ee54b3f06edf974dc7d3aa99d6841b
SA3_REFERENCE_SRC ?= test-artifacts/stable-audio-3

$(SA3_REFERENCE_SRC)/stable_audio_3/model.py:
	git clone --quiet https://github.com/Stability-AI/stable-audio-3 $(SA3_REFERENCE_SRC)
	git -C $(SA3_REFERENCE_SRC) checkout --quiet $(SA3_REFERENCE_COMMIT)

parity: $(STAMP) $(PARITY_VENV)/.installed $(SA3_REFERENCE_SRC)/stable_audio_3/model.py
	rm -rf $(PARITY_OUT)
	TORCHDYNAMO_DISABLE=1 $(PARITY_VENV)/bin/python parity/build_reference.py $(PARITY_OUT)
	$(PY) parity/compare.py $(PARITY_OUT)
	SA3_REFERENCE_SRC=$(abspath $(SA3_REFERENCE_SRC)) TORCHDYNAMO_DISABLE=1 \
		$(PARITY_VENV)/bin/python parity/build_e2e.py $(PARITY_OUT)
	$(PY) parity/compare_e2e.py $(PARITY_OUT)
	$(PY) parity/lora_compare.py $(PARITY_OUT)
	$(PY) parity/sao_lora_e2e.py $(PARITY_OUT)/sao-lora

# Re-pin requirements/lock.txt from the loose dependencies in pyproject.toml.
lock:
	$(PY) scripts/lock.py

clean:
	rm -rf $(VENV) test-artifacts .pytest_cache .mypy_cache .ruff_cache .import_linter_cache .grimp_cache
