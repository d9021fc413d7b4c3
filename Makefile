# Atelier: the two commands of the README, and the checks CI runs.
#   make demo   install into .venv and run the main job on the shipped demo cell
#   make test   install into .venv (with dev tools) and run every check and test
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out

.PHONY: demo test install install-dev check pytest system-deps fast bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python system-deps
	$(BIN)/pip install --quiet -e .

install-dev: $(BIN)/python system-deps
	$(BIN)/pip install --quiet -e '.[dev]'

# Offscreen rendering needs EGL (Mesa); install it from Debian when it is missing.
system-deps:
	@ldconfig -p | grep -q 'libEGL.so.1' || { command -v apt-get >/dev/null && \
	  (apt-get update -qq && apt-get install -y -qq libegl1 libgl1-mesa-dri libosmesa6 >/dev/null) ; } || true

demo: install
	$(BIN)/atelier sim --seconds 10 --render $(OUT)/demo_cell.mp4
	$(BIN)/atelier sim --seconds 10 --render $(OUT)/demo_cell.png --camera overview

check:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python ../shared/tools/check_layers.py . || [ ! -f ../shared/tools/check_layers.py ]

pytest:
	$(BIN)/python -m pytest

test: install-dev check pytest

# The fast part, for a developer's edit-test loop (about a minute).
fast:
	$(BIN)/python -m pytest -m "not slow and not render" -x -q

bench:
	$(BIN)/python bench/bench_twin.py

clean:
	rm -rf $(VENV) $(OUT) .mypy_cache .pytest_cache .ruff_cache
