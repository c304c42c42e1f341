# `make demo` and `make test` each set up .venv on first use (fast when already there).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# On x86_64 these two lie on this machine's disk; elsewhere override, e.g.
#   make test TORCH_SPEC="torch==2.9.1 torchvision==0.24.1"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# A pip constraints file for every dependency but torch (empty: the newest versions pyproject allows).
CONSTRAINTS ?=
STAMP := $(VENV)/.hexa-installed

.PHONY: setup demo test test-floors bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-compile --disable-pip-version-check $(TORCH_SPEC)
	$(PY) -m pip install -q --no-compile --disable-pip-version-check -e '.[test]' $(if $(CONSTRAINTS),-c $(CONSTRAINTS))
	@# pip compiles serially (~36 s); compileall on every core takes half that. A few files in the wheels are
	@# meant for newer Pythons and do not compile, as pip also skips them, hence the `|| true`.
	@$(PY) -m compileall -qq -j 0 $(VENV)/lib || true
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/hexa demo

test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

# CI's second run: every dependency at its pyproject floor, torch included, in its own venv. That torch is
# not on this disk: pip downloads its CUDA build from PyPI (about 2.5 GB; the suite runs on the CPU).
FLOOR_TORCH_SPEC := $(shell grep -E '^torch(vision)?==' ci/constraints-floors.txt | tr '\n' ' ')
test-floors:
	$(MAKE) test VENV=.venv-floors CONSTRAINTS=ci/constraints-floors.txt TORCH_SPEC="$(FLOOR_TORCH_SPEC)"

# Quick versions (minutes); the full low-shot protocol with its serial reference takes ~35 min:
#   .venv/bin/python bench/lowshot_svm.py
bench: setup
	$(PY) bench/pretrain_step.py
	$(PY) bench/lowshot_svm.py --quick
	$(PY) bench/features.py

clean:
	rm -rf $(VENV) .venv-floors *.egg-info
