"""Nested config keys (vit, med_config) are checked like top-level ones; every problem of a file is reported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pretrain import main

REPO = Path(__file__).resolve().parents[1]
DEMO = str(REPO / "configs" / "pretrain_demo.yaml")


@pytest.mark.parametrize("override, message", [
    ("vit.depht=2", "key 'vit': unknown shape key 'depht'; did you mean 'depth'?"),
    ("vit.depth=two", "key 'vit': 'depth' must be an integer, got str 'two'"),
    ("vit.num_heads=5", "embed_dim 128 is not a multiple of num_heads 5"),
    ("med_config.hidden_sise=64", "key 'med_config': unknown key 'hidden_sise'; did you mean 'hidden_size'?"),
    ("med_config.hidden_act=swish", "hidden_act 'swish' is not one of"),
    ("vit=huge", "key 'vit': 'huge' is not 'base', 'large', a timm model name or a shape mapping; "
                 "timm models named like it: vit_huge_patch14_224"),
    ("vit=basee", "did you mean 'base'?"),
])
def test_check_rejects_bad_nested_keys_with_suggestions(override, message, capsys):
    assert main(["--config", DEMO, "--check", override]) == 2
    err = capsys.readouterr().err
    assert message in err and f"command-line override {override.split('=')[0]}=..." in err


def test_every_problem_of_a_file_is_reported_with_its_line(tmp_path, capsys):
    med = tmp_path / "med.json"
    med.write_text(json.dumps({"hidden_size": 64, "num_hidden_layer": 2, "num_attention_heads": "four"}))
    config = tmp_path / "bad.yaml"
    config.write_text("train_file: a.json\nbatch_sise: 4\ninit_lr: fast\n"
                      "vit: {patch_size: 8, embed_dim: 32, depht: 2, num_heads: 4}\nmed_config: med.json\n")
    assert main(["--config", str(config), "--check"]) == 2
    err = capsys.readouterr().err
    assert f"6 problems in {config}:" in err
    for expected in (f"{config}:2: unknown config key 'batch_sise'; did you mean 'batch_size'?",
                     f"{config}:3: key 'init_lr' must be a number, got str 'fast'",
                     f"{config}:4: key 'vit': unknown shape key 'depht'; did you mean 'depth'?",
                     f"{config}:4: key 'vit': the shape mapping lacks 'depth'",
                     f"{config}:5: key 'med_config' ({med}): unknown key 'num_hidden_layer'; "
                     "did you mean 'num_hidden_layers'?",
                     f"{config}:5: key 'med_config' ({med}): 'num_attention_heads' must be an integer, got str 'four'"):
        assert expected in err, expected
    config.write_text("train_file: a.json\nmed_config: absent.json\n")
    assert main(["--config", str(config), "--check"]) == 2
    assert "absent.json: med_config file not found" in capsys.readouterr().err


def test_good_nested_values_pass(capsys):
    assert main(["--config", DEMO, "--check", "vit.depth=2", "vit.mlp_ratio=2", "med_config.hidden_size=64",
                 "vit=vit_tiny_patch16_224"]) == 0
    assert "vit: vit_tiny_patch16_224" in capsys.readouterr().out


def test_check_into_a_closed_pipe_ends_quietly():
    """``pretrain.py --check ... | head``: the reader may be gone before the config is printed."""
    proc = subprocess.Popen([sys.executable, str(REPO / "pretrain.py"), "--config", DEMO, "--check"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # like `head` that has exited: every write gets EPIPE
    _, err = proc.communicate(timeout=120)
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()
    assert proc.returncode == 0
