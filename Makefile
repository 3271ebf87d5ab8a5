# The README's two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install clean-venv

install: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# The main job on the embedded default data: phantom generation (skipped when present) and CPU pretraining.
# --resume: a rerun continues (or, when finished, reports) the same run instead of refusing its output_dir.
demo: $(STAMP)
	$(PY) -m data.phantom --out data/phantom_data --quiet
	$(PY) pretrain.py --config configs/pretrain_demo.yaml --resume

clean-venv:
	rm -rf $(VENV)
