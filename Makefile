# Two commands: `make demo` runs the main job, `make test` runs the tests.
# Both create .venv and install the pinned requirements on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PRESET ?= quick
EXPERIMENT ?= pso_brain_mri

.PHONY: install demo test smoke clean

$(VENV)/installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

install: $(VENV)/installed

demo: install
	$(PY) launch.py --experiment=$(EXPERIMENT) --preset=$(PRESET)

smoke: install
	$(PY) launch.py --experiment=pso_synthetic --preset=smoke

test: install
	$(PY) -m pytest -q -n auto --dist worksteal tests

clean:
	rm -rf $(VENV) .pytest_cache
