"""Local folder or hub name: one resolver, fast and clear when the hub cannot be reached or a path is missing.

No test reaches a real hub: "no network" is a closed local port as HF_ENDPOINT
(connection refused at once), so the outcome does not depend on the sandbox.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from models import CheckpointError, TokenizerError, build_model, load_checkpoint
from utils.errors import SourceError
from models.sources import PROBE_TIMEOUT_S, resolve_source
from models.tokenizer import load_tokenizer
from models.vit import build_vit, load_timm_pretrained
from tests.conftest import TEST_CAPTIONS, tiny_model_config
from tests.hub_helpers import closed_port, write_bert_folder, write_hub_cache

REPO_ROOT = Path(__file__).resolve().parents[1]
WORDS = sorted({w for c in TEST_CAPTIONS for w in c.split()})

# Each case runs in a fresh interpreter whose hub is a closed port: (name, call).
_OFFLINE_SCRIPT = textwrap.dedent("""
    import json, sys, time
    from models.checkpoint import load_bert_weights, read_checkpoint
    from models.med import MedConfig, MedModel
    from models.tokenizer import load_tokenizer
    from models.vit import build_vit, load_timm_pretrained

    encoder = MedModel(MedConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=64, max_position_embeddings=40, encoder_width=24))
    vit, _ = build_vit({"patch_size": 8, "embed_dim": 24, "depth": 2, "num_heads": 4}, 32)
    cases = {
        "tokenizer": lambda: load_tokenizer("bert-base-uncased"),
        "text_encoder": lambda: load_bert_weights(encoder, "bert-base-uncased"),
        "vit_init": lambda: load_timm_pretrained(vit, "deit_base_patch16_224.fb_in1k"),
        "pretrained": lambda: read_checkpoint("Salesforce/blip-itm-base-coco"),
        "cached tokenizer": lambda: load_tokenizer("local-org/tiny-biomedbert"),
        "cached text_encoder": lambda: load_bert_weights(encoder, "local-org/tiny-biomedbert"),
    }
    for name, call in cases.items():
        start = time.perf_counter()
        try:
            call()
            error = None
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        print(json.dumps({"case": name, "seconds": time.perf_counter() - start, "error": error}))
""")


def test_hub_names_fail_fast_without_network_and_cached_copies_load(tmp_path):
    cache = tmp_path / "hub-cache"
    write_bert_folder(tmp_path / "biomedbert", WORDS, weights="pytorch_model.bin")
    write_hub_cache(cache, "local-org/tiny-biomedbert", tmp_path / "biomedbert")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}", HF_HUB_CACHE=str(cache), HF_HOME=str(tmp_path),
               PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", _OFFLINE_SCRIPT], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    results = {r["case"]: r for r in map(json.loads, done.stdout.splitlines())}
    assert "Retrying" not in done.stderr  # no backoff loop before the message
    for name in ("tokenizer", "text_encoder", "vit_init", "pretrained"):
        error = results[name]["error"]
        assert error is not None and "not a local folder" in error and "the hub is unreachable" in error, error
        assert "127.0.0.1" in error and "hf download" in error
        assert results[name]["seconds"] < PROBE_TIMEOUT_S + 2, results[name]
    assert "'deit_base_patch16_224.fb_in1k'" in results["vit_init"]["error"]
    assert "Salesforce/blip-itm-base-coco" in results["pretrained"]["error"]
    # the hub cache's copy is used when the hub is unreachable, without waiting for it
    assert results["cached tokenizer"]["error"] is None, results["cached tokenizer"]
    assert results["cached text_encoder"]["error"] is None, results["cached text_encoder"]


def test_offline_mode_names_the_setting():
    # conftest sets HF_HUB_OFFLINE=1 for the whole suite
    with pytest.raises(TokenizerError, match=r"not a local folder .* hub is unreachable: HF_HUB_OFFLINE=1 is set"):
        load_tokenizer("medvlp-test/absent-model")


def test_relative_paths_from_another_folder_are_named(tokenizer, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    here = f"relative to the current folder {tmp_path}"
    with pytest.raises(TokenizerError, match=f"tokenizer 'data/phantom_data/tokenizer' not found: .*{here}"):
        load_tokenizer("data/phantom_data/tokenizer")
    with pytest.raises(CheckpointError, match=f"text_encoder 'models/bert/base' not found: .*{here}"):
        build_model("pretrain", tiny_model_config(text_encoder="models/bert/base"), tokenizer=tokenizer)
    with pytest.raises(ValueError, match=f"vit_init 'weights/vit.pth': not a weights file .*{tmp_path}"):
        build_model("pretrain", tiny_model_config(vit_init="weights/vit.pth"), tokenizer=tokenizer)
    model = build_model("retrieval", tiny_model_config(), tokenizer=tokenizer)
    with pytest.raises(CheckpointError, match=f"checkpoint 'output/run/checkpoint_last.pth' not found: .*{here}"):
        load_checkpoint(model, "output/run/checkpoint_last.pth")
    # a one-slash relative path is a valid repo id: both readings are ruled out in one message
    with pytest.raises(TokenizerError, match=f"not a local folder \\(no such file or folder {here}\\) "
                                             "and the hub is unreachable"):
        load_tokenizer("phantom_data/tokenizer")


def test_existing_paths_win_over_hub_names(tmp_path, monkeypatch):
    folder = tmp_path / "bert-base-uncased"  # a local folder named like a hub model
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_source("bert-base-uncased", what="tokenizer") == Path("bert-base-uncased")
    assert resolve_source("~", what="x") == Path.home()
    with pytest.raises(SourceError, match="'/no/such/dir' not found: no such file or folder, and not a hub name"):
        resolve_source("/no/such/dir", what="x")


def test_vit_init_from_a_local_weights_folder(tmp_path):
    donor, _ = build_vit({"patch_size": 8, "embed_dim": 24, "depth": 2, "num_heads": 4}, 32)
    from safetensors.torch import save_file

    (tmp_path / "vit").mkdir()
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(tmp_path / "vit" / "model.safetensors"))
    target, _ = build_vit({"patch_size": 8, "embed_dim": 24, "depth": 2, "num_heads": 4}, 32)
    assert load_timm_pretrained(target, str(tmp_path / "vit")) == []
    assert torch.equal(target.pos_embed, donor.pos_embed)
