# GridCLIP for Detectron2 — set-up, demo and tests.
#   make setup   create .venv with the pinned stack (idempotent: a second run takes seconds)
#   make demo    set up if needed, then train + evaluate + visualise the embedded default on CPU
#   make test    set up if needed, then run the whole pytest suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.gridclip-setup-done
PYTEST_ARGS ?=

.PHONY: setup demo test clean-venv

setup: $(STAMP)

$(STAMP): requirements.txt setup.py tools/install_detectron2.py tools/detectron2_C_placeholder.py
	@start=$$(date +%s); \
	set -e; \
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV); \
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt; \
	$(PY) tools/install_detectron2.py --cache-dir $(VENV)/cache; \
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .; \
	$(PY) -c "import gridclip, detectron2; print('gridclip', gridclip.__version__, '| detectron2', detectron2.__version__)"; \
	touch $(STAMP); \
	echo "[setup] done in $$(( $$(date +%s) - start )) s"
	@true

demo: setup
	$(PY) tools/run_embedded_default.py

test: setup
	$(PY) -m pytest tests $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
