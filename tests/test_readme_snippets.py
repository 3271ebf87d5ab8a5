"""Every snippet of the README's API, export and offline sections runs, as written, against tiny local models.

The test builds what a fresh clone has after ``make demo`` (``configs/``,
``data/phantom_data/`` with a tokenizer and images, ``output/pretrain_demo/
checkpoint_last.pth``), in miniature, in a temporary folder, and runs each
block there: ``python`` blocks with ``exec``, ``bash`` blocks line by line, and
``yaml`` blocks as model config keys through ``build_model``. Only the names
in :data:`SUBSTITUTIONS` (BLIP-base files and shapes) are replaced, and each
must occur, so an edited snippet cannot silently stop being tested. Lines that
need network are listed in :data:`NETWORK_ONLY` and must occur too.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import shlex
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from ruamel.yaml import YAML

from models import build_model, save_checkpoint
from models.tokenizer import train_wordpiece_tokenizer
from tests.conftest import TEST_CAPTIONS, TINY_TEXT, TINY_VIT
from tests.hub_helpers import write_bert_folder
from tests.test_blip_equivalence import randomize_

REPO_ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("Python API", "Export to transformers", "Offline use and local models")
TINY_MED = dict(TINY_TEXT, max_position_embeddings=64)  # the demo's max_length is 64
TINY_VIT_TEXT = json.dumps(TINY_VIT)

# section -> [(text in the README, what the test runs instead)]
SUBSTITUTIONS = {
    "Python API": [
        ('"med_config": "configs/med_config.json"', '"med_config": "tiny_med_config.json"'),
        ('"tokenizer": "bert-base-uncased"', '"tokenizer": "data/phantom_data/tokenizer"'),
        ('"vit": "base", "image_size": 384',
         f'"vit": {TINY_VIT_TEXT}, "image_size": 32, "embed_dim": 16, "queue_size": 20'),
        ('"model_base_retrieval_coco.pth"', '"blip_retrieval_tiny.pth"'),
    ],
    "Offline use and local models": [
        ("med_config: configs/med_config.json", "med_config: tiny_bert_med_config.json"),
    ],
}
NETWORK_ONLY = ("hf download bert-base-uncased", "hf download microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract")


def readme_blocks() -> dict[str, list[tuple[str, int, str]]]:
    """section -> [(language, first line number, code)] for the sections under test."""
    lines = (REPO_ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    blocks: dict[str, list[tuple[str, int, str]]] = {name: [] for name in SECTIONS}
    section, language, start, body = None, None, 0, []
    for number, line in enumerate(lines, 1):
        if language is None and line.startswith("## "):
            section = line[3:].strip()
        elif language is None and line.startswith("```") and line.strip() != "```":
            language, start, body = line.strip("`").strip(), number + 1, []
        elif language is not None and line.strip() == "```":
            if section in blocks:
                blocks[section].append((language, start, "\n".join(body)))
            language = None
        elif language is not None:
            body.append(line)
    return blocks


@pytest.fixture
def fresh_clone(tmp_path, monkeypatch):
    """A miniature of the repository folder after ``make demo``, as the current folder."""
    shutil.copytree(REPO_ROOT / "configs", tmp_path / "configs")
    phantom = tmp_path / "data" / "phantom_data"
    (phantom / "images" / "test").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        pixels = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(phantom / "images" / "test" / f"test_{i:05d}.png")
    (phantom / "pretrain.json").write_text(json.dumps(
        [{"image": f"images/test/test_{i % 4:05d}.png", "caption": c} for i, c in enumerate(TEST_CAPTIONS)]))
    (phantom / "retrieval_test.json").write_text(json.dumps(
        [{"image": f"images/test/test_{i:05d}.png", "caption": TEST_CAPTIONS[i:i + 2]} for i in range(4)]))
    train_wordpiece_tokenizer(TEST_CAPTIONS, phantom / "tokenizer", deterministic=True)
    (tmp_path / "tiny_med_config.json").write_text(json.dumps(TINY_MED))
    (tmp_path / "tiny_bert_med_config.json").write_text(json.dumps(TINY_TEXT))  # the tiny BERT's shapes

    config = {"tokenizer": "data/phantom_data/tokenizer", "med_config": dict(TINY_MED), "vit": dict(TINY_VIT),
              "image_size": 32, "embed_dim": 16, "queue_size": 20, "max_words": 60, "max_length": 64,
              "text_encoder": None, "vit_init": None, "pretrained": None, "attn_impl": "sdpa"}
    monkeypatch.chdir(tmp_path)
    model = build_model("pretrain", config)
    randomize_(model, seed=21)
    save_checkpoint(model, tmp_path / "output" / "pretrain_demo" / "checkpoint_last.pth", config=config, epoch=1)
    retrieval = build_model("retrieval", config)
    randomize_(retrieval, seed=22)
    save_checkpoint(retrieval, tmp_path / "blip_retrieval_tiny.pth")  # BLIP's layout, no config
    write_bert_folder(tmp_path / "models_local" / "biomedbert", sorted({w for c in TEST_CAPTIONS for w in c.split()}),
                      legacy_layernorm_names=True)
    return tmp_path


def _substituted(section: str, code: str, used: set[str]) -> str:
    for old, new in SUBSTITUTIONS.get(section, []):
        if old in code:
            used.add(old)
            code = code.replace(old, new)
    return code


def _run_bash_line(line: str) -> None:
    """``[VAR=value ...] python -m module args`` or ``python script.py args``, run in this process as python would
    run it (``runpy``, ``sys.argv``, the exit code), without paying an interpreter start per line."""
    words = shlex.split(line)
    env = {}
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):  # VAR=value prefixes
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    assert words[0] == "python", f"README bash line does not start with python: {line}"
    saved_argv, saved_env = sys.argv, {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # runpy: the module was imported by this test already
            if words[1] == "-m":
                sys.argv = [words[2], *words[3:]]
                runpy.run_module(words[2], run_name="__main__", alter_sys=True)
            else:
                sys.argv = words[1:]
                runpy.run_path(str(REPO_ROOT / words[1]), run_name="__main__")  # the repository's script
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    finally:
        sys.argv = saved_argv
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert code == 0, f"README line exited with {code}: {line}"


def _run_yaml(code: str) -> None:
    keys = YAML(typ="safe", pure=True).load(code)
    model = build_model("pretrain", {**keys, "vit": dict(TINY_VIT), "image_size": 32})
    for report in model.init_reports:
        assert not report.shape_mismatch and not report.unexpected_problems, report.summary()


def test_readme_sections_run_as_written(fresh_clone, capsys):
    blocks = readme_blocks()
    assert [len(blocks[name]) for name in SECTIONS] == [2, 2, 4], "README blocks moved: update this test's plan"
    used: set[str] = set()
    network_lines: list[str] = []
    for section in SECTIONS:
        for language, line_number, code in blocks[section]:
            code = _substituted(section, code, used)
            where = f"README.md:{line_number} ({section})"
            if language == "python":
                exec(compile(code, where, "exec"), {"__name__": "__readme__"})
            elif language == "bash":
                for line in code.splitlines():
                    if line.startswith(NETWORK_ONLY):
                        network_lines.append(line)
                    elif line.strip() and not line.startswith("#"):
                        _run_bash_line(line)
            elif language == "yaml":
                _run_yaml(code)
            else:
                raise AssertionError(f"{where}: no runner for {language!r} blocks")
    assert used == {old for pairs in SUBSTITUTIONS.values() for old, _ in pairs}
    assert len(network_lines) == len(NETWORK_ONLY)
    printed = capsys.readouterr().out
    assert "axial ct a hyperdense lesion in the left frontal lobe" in printed  # the API's cleaned caption
    assert "the tokenizer fits these captions" in printed
    assert (fresh_clone / "export" / "demo-itm" / "model.safetensors").exists()
