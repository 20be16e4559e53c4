# GridCLIP for Detectron2 — set-up, demo and tests.
#   make setup   create .venv with the pinned stack (idempotent: a second run takes seconds)
#   make demo    set up if needed, then train + evaluate + visualise the embedded default on CPU
#   make test    set up if needed, then run the whole pytest suite
#   make test-detectron2-main
#                the whole suite again, in .venv-d2main: the same pinned requirements plus Detectron2
#                main built (CPU ops) from $(D2MAIN_ARCHIVE); needs that archive (../shared/third_party/)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.gridclip-setup-done
PYTEST_ARGS ?=

D2MAIN_VENV    ?= .venv-d2main
D2MAIN_PY      := $(D2MAIN_VENV)/bin/python
D2MAIN_STAMP   := $(D2MAIN_VENV)/.gridclip-setup-done
THIRD_PARTY    ?= ../shared/third_party
D2MAIN_ARCHIVE ?= $(THIRD_PARTY)/detectron2-main-02b5c4e.tar.gz

# pytest exits 5 when it collected no test: for a whole suite that is a failure, said plainly.
define run_pytest
	@set +e; $(1) -m pytest tests $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "[test] pytest collected no tests (exit 5) with PYTEST_ARGS='$(PYTEST_ARGS)'" >&2; fi; \
	exit $$rc
endef

.PHONY: setup demo test clean-venv setup-detectron2-main test-detectron2-main clean-venv-d2main print-%

setup: $(STAMP)

$(STAMP): requirements.txt setup.py dev/install_detectron2.py dev/detectron2_C_placeholder.py
	@start=$$(date +%s); \
	set -e; \
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV); \
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt; \
	$(PY) dev/install_detectron2.py --cache-dir $(VENV)/cache; \
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .; \
	$(PY) -c "import gridclip, detectron2; print('gridclip', gridclip.__version__, '| detectron2', detectron2.__version__)"; \
	touch $(STAMP); \
	echo "[setup] done in $$(( $$(date +%s) - start )) s"
	@true

demo: setup
	$(PY) tools/run_embedded_default.py

test: setup
	$(call run_pytest,$(PY))

clean-venv:
	rm -rf $(VENV)

setup-detectron2-main: $(D2MAIN_STAMP)

$(D2MAIN_ARCHIVE):
	@echo "[setup-detectron2-main] $(D2MAIN_ARCHIVE) not found: Detectron2 main's source archive lives in ../shared/third_party/ (or set D2MAIN_ARCHIVE=...)" >&2
	@exit 1

# The build happens under $(D2MAIN_VENV)/src (never next to the archive); a second run is a no-op.
$(D2MAIN_STAMP): requirements.txt setup.py dev/install_detectron2.py $(D2MAIN_ARCHIVE)
	@start=$$(date +%s); \
	set -e; \
	[ -x $(D2MAIN_PY) ] || $(PYTHON) -m venv $(D2MAIN_VENV); \
	$(D2MAIN_PY) -m pip install -q --disable-pip-version-check -r requirements.txt; \
	echo "[setup-detectron2-main] venv + requirements in $$(( $$(date +%s) - start )) s"; \
	$(D2MAIN_PY) dev/install_detectron2.py --from-source $(D2MAIN_ARCHIVE) --build-dir $(D2MAIN_VENV)/src; \
	$(D2MAIN_PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .; \
	$(D2MAIN_PY) -c "import gridclip, detectron2; print('gridclip', gridclip.__version__, '| detectron2', detectron2.__version__)"; \
	touch $(D2MAIN_STAMP); \
	echo "[setup-detectron2-main] done in $$(( $$(date +%s) - start )) s"
	@true

test-detectron2-main: setup-detectron2-main
	$(call run_pytest,$(D2MAIN_PY))

clean-venv-d2main:
	rm -rf $(D2MAIN_VENV)

print-%:
	@echo $($*)
