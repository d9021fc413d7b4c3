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

# llama.cpp has no wheel: it is built from source. The default native build crashes on CPUs
# with AMX, so build portable AVX2 code; --no-cache-dir because pip's wheel cache ignores CMAKE_ARGS.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
# The portable wheel is kept in a wheelhouse outside the repository, so a second install (a new
# .venv, CI on the same machine) reuses it instead of compiling for minutes again.
WHEELHOUSE ?= $(HOME)/.cache/atelier/wheels
LLAMA := llama-cpp-python==0.3.36
$(VENV)/.llama-built: | $(BIN)/python
	$(BIN)/python -c "import llama_cpp" 2>/dev/null || { \
	  ls $(WHEELHOUSE)/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1 || \
	    CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip wheel --quiet --no-deps --no-cache-dir -w $(WHEELHOUSE) '$(LLAMA)'; \
	  $(BIN)/pip install --quiet --find-links $(WHEELHOUSE) '$(LLAMA)'; }
	touch $@

install: $(BIN)/python system-deps $(VENV)/.llama-built
	$(BIN)/pip install --quiet -e .

install-dev: $(BIN)/python system-deps $(VENV)/.llama-built
	$(BIN)/pip install --quiet -e '.[dev]'

# Offscreen rendering needs EGL (Mesa); the console's browser tests need Debian's Chromium.
# Both are installed from Debian when missing (as root; otherwise say what to install).
system-deps:
	@missing=""; ldconfig -p | grep -q 'libEGL.so.1' || missing="$$missing libegl1 libgl1-mesa-dri"; \
	  [ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	    else echo "please install with apt-get:$$missing"; fi; \
	  fi

demo: install
	BIN=$(BIN) OUT=$(OUT) scripts/demo.sh

check:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python scripts/check_layers.py .
	@if [ -f ../shared/tools/check_layers.py ]; then $(BIN)/python ../shared/tools/check_layers.py .; \
	  else echo "(../shared/tools/check_layers.py is not beside this clone; scripts/check_layers.py, the stricter one, ran)"; fi

pytest:
	$(BIN)/python -m pytest

test: install-dev check pytest

# The fast part, for a developer's edit-test loop (about a minute).
fast:
	$(BIN)/python -m pytest -m "not slow and not render" -x -q

bench:
	$(BIN)/python bench/bench_twin.py
	$(BIN)/python bench/bench_machines.py
	$(BIN)/python bench/bench_robots.py
	$(BIN)/python bench/bench_safety.py
	$(BIN)/python bench/bench_policy.py
	$(BIN)/python bench/bench_planner.py --split test --modes intent

clean:
	rm -rf $(VENV) $(OUT) .mypy_cache .pytest_cache .ruff_cache
