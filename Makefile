# Two commands on a fresh machine: `make demo` and `make test` (see README).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The folder `make demo` compresses; Kodak from the shared data when it is there.
IMAGES ?= $(firstword $(wildcard ../shared/data/kodak))
STAMP  := $(VENV)/.installed
# The runtime as a user installs it (`pip install qaft`: no PyTorch), for the tests that
# cover what such an install offers.
RT_VENV  ?= .venv-runtime
RT_STAMP := $(RT_VENV)/.installed
RUNTIME_TESTS := tests/test_container.py tests/test_entropy.py tests/test_golden.py \
                 tests/test_lean_runtime.py tests/test_rate_control.py \
                 tests/test_trust_model_dir.py tests/test_tool.py tests/test_model_meta.py \
                 tests/test_api.py

.PHONY: demo test install lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch==2.13.0 is the CPU build this kind of machine has on disk; a bare `torch`
# requirement would pull a multi-GB CUDA build instead.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[train,test,distributed,openvino]"
	touch $@

install: $(STAMP)

$(RT_STAMP): pyproject.toml
	$(PYTHON) -m venv $(RT_VENV)
	$(RT_VENV)/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
	@$(RT_VENV)/bin/python -c "import importlib.util as u, sys; \
	  sys.exit('torch is installed in $(RT_VENV): the runtime suite must run without it' \
	  if u.find_spec('torch') else 0)"
	touch $@

# The zoo's other distributions (zoo/, zoo/train: the models the base package leaves out),
# built from the files where the checkout keeps them, as a user installs them.
ZOO_STAMP := $(VENV)/.zoo-installed
$(ZOO_STAMP): $(STAMP) zoo/build_backend.py runtime/zoo/index.json \
              $(wildcard runtime/zoo/*/manifest.json training/zoo/*/*.pt)
	$(BIN)/python -m pip install -q --disable-pip-version-check ./zoo ./zoo/train
	touch $@

demo: $(STAMP) $(ZOO_STAMP)
	@if [ -z "$(IMAGES)" ]; then \
	  echo "make demo: no images to compress: run 'make demo IMAGES=path/to/folder'" \
	       "(../shared/data/kodak is used when present)"; exit 2; fi
	$(BIN)/qaft-run demo --data "$(IMAGES)" --out demo-out

test: $(STAMP) $(RT_STAMP)
	$(BIN)/python -m pytest -q
	$(RT_VENV)/bin/python -m pytest -q -p no:cacheprovider $(RUNTIME_TESTS)

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf demo-out .pytest_cache $(RT_VENV)
