# `make demo` and `make test` each build (or refresh) .venv, install the project with the
# pinned CPU torch from constraints.txt, then run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow test-extras test-vision lint bench clean venv
SERVE_VENV ?= .venv-serve
SERVE_STAMP := $(SERVE_VENV)/.installed
VISION_VENV ?= .venv-vision
VISION_STAMP := $(VISION_VENV)/.installed

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,data]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/attackgen demo

# The default suite leaves out the tests marked slow (end-to-end sweeps, kill-and-resume, two-rank runs,
# the docs' long console blocks, the cross-checks against the reference AutoAttack): `make test-slow` runs
# those, and CI runs both.
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# The [onnx] and [serve] extras (onnxruntime, onnx, kserve, orjson) in their own venv, torch still pinned:
# ONNX Runtime oracles and a real KServe ModelServer on loopback (tests/test_onnx.py, tests/test_endpoint.py).
$(SERVE_STAMP): pyproject.toml constraints.txt
	test -x $(SERVE_VENV)/bin/python || $(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/python -m pip install -q --upgrade pip
	$(SERVE_VENV)/bin/python -m pip install -q -c constraints.txt -e ".[dev,data,onnx,serve]"
	touch $(SERVE_STAMP)

test-extras: $(SERVE_STAMP)
	$(SERVE_VENV)/bin/python -m pytest -q tests/test_onnx.py tests/test_endpoint.py

# The [vision] extra (torchvision, safetensors, timm, transformers) in its own venv: torchvision imports only with the torch it
# was built for (torch==2.14.1 with torchvision==0.29.1), so this venv does not take constraints.txt.
$(VISION_STAMP): pyproject.toml
	test -x $(VISION_VENV)/bin/python || $(PYTHON) -m venv $(VISION_VENV)
	$(VISION_VENV)/bin/python -m pip install -q --upgrade pip
	$(VISION_VENV)/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(VISION_VENV)/bin/python -m pip install -q -e ".[dev,data,vision]" torch==2.14.1 torchvision==0.29.1
	touch $(VISION_STAMP)

test-vision: $(VISION_STAMP)
	$(VISION_VENV)/bin/python -m pytest -q tests/test_vision.py

# The slow tests, with the reference AutoAttack (pyautoattack 0.2.0, the authors' code, which declares no
# dependencies) installed into its own folder for its cross-checks only, never a dependency of attackgen:
# APGD, FAB and Square (the AutoAttack presets' draws) must give the reference's adversarial inputs.
PEERS_DIR ?= .peers
$(PEERS_DIR)/.installed:
	$(BIN)/python -m pip install -q --no-deps --target $(PEERS_DIR) pyautoattack==0.2.0
	touch $@

test-slow: $(STAMP) $(PEERS_DIR)/.installed
	$(BIN)/python -m pytest -q -rs -m slow

# ruff, then mypy over taxonomy and attackgen (config: [tool.mypy] in pyproject.toml); both must pass.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/threat_space.py

clean:
	rm -rf $(VENV) $(SERVE_VENV) $(VISION_VENV) $(PEERS_DIR) .pytest_cache runs
