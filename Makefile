# Two commands on a fresh machine: `make demo` and `make test` (see README).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The folder `make demo` compresses; Kodak from the shared data when it is there.
IMAGES ?= $(firstword $(wildcard ../shared/data/kodak))
STAMP  := $(VENV)/.installed

.PHONY: demo test install lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch==2.13.0 is the CPU build this kind of machine has on disk; a bare `torch`
# requirement would pull a multi-GB CUDA build instead.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[train,test,distributed]"
	touch $@

install: $(STAMP)

demo: $(STAMP)
	@if [ -z "$(IMAGES)" ]; then \
	  echo "make demo: no images to compress: run 'make demo IMAGES=path/to/folder'" \
	       "(../shared/data/kodak is used when present)"; exit 2; fi
	$(BIN)/qaft-run demo --data "$(IMAGES)" --out demo-out

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf demo-out .pytest_cache
