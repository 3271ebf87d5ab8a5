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

# The main job on the embedded default data: phantom generation (skipped when present), CPU pretraining,
# zero-shot retrieval of the pretrained model, retrieval fine-tuning + test, the two next to chance, and
# Grad-CAM maps (HTML index) and localisation scores of the pretrained model (layer 0: it localises better
# than the fine-tuned one, measured in docs/vis.md) on 8 / all phantom test images.
# --resume: a rerun continues (or, when finished, reports) the same run instead of refusing its output_dir.
demo: $(STAMP)
	$(PY) -m data.phantom --out data/phantom_data --quiet
	$(PY) pretrain.py --config configs/pretrain_demo.yaml --resume
	$(PY) train_retrieval.py --config configs/retrieval_demo.yaml --evaluate output_dir=output/zero_shot_demo \
		val_file=null
	$(PY) train_retrieval.py --config configs/retrieval_demo.yaml --resume
	$(PY) -m tasks.demo_report --zero_shot output/zero_shot_demo/evaluate.json \
		--fine_tuned output/retrieval_demo/results.json
	$(PY) vis.py --checkpoint output/pretrain_demo/checkpoint_last.pth --json data/phantom_data/retrieval_test.json \
		--all --limit 8 --layer 0 --threads 1 --out_dir output/vis_demo
	$(PY) vis.py --checkpoint output/pretrain_demo/checkpoint_last.pth --json data/phantom_data/retrieval_test.json \
		--score --layer 0 --threads 1 --score_out output/vis_demo/scores.json
	@echo "Attention maps: output/vis_demo/index.html (figures, .npy maps); localisation: output/vis_demo/scores.json"

clean-venv:
	rm -rf $(VENV)
