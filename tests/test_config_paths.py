"""Paths in configs: resolved at load against the config file's folder, the repository folder, the current folder."""

from __future__ import annotations

import functools
import os

import pytest

import engine.config
from engine.config import REPOSITORY, same_setting
from pretrain import main
from tasks.pretrain import PRETRAIN_SCHEMA

load_config = functools.partial(engine.config.load_config, schema=PRETRAIN_SCHEMA)


@pytest.fixture
def layout(tmp_path, monkeypatch):
    """tmp/experiment/{config.yaml, a.json, images/}, tmp/cwd/{a.json, b.json}; the current folder is tmp/cwd."""
    experiment, cwd = tmp_path / "experiment", tmp_path / "cwd"
    (experiment / "images").mkdir(parents=True)
    cwd.mkdir()
    for path in (experiment / "a.json", cwd / "a.json", cwd / "b.json"):
        path.write_text("[]")
    monkeypatch.chdir(cwd)
    return experiment, cwd


def test_config_values_resolve_against_the_config_folder_first(layout):
    experiment, cwd = layout
    config_file = experiment / "config.yaml"
    config_file.write_text("train_file: [a.json, b.json]\nimage_root: images\neval_file: missing.json\n"
                           "tokenizer: bert-base-uncased\npretrained: https://example.org/model_base.pth\n")
    notes: list[str] = []
    raw, sources, origin = engine.config.read_config_sources(config_file)
    cfg = engine.config.validate_config(raw, PRETRAIN_SCHEMA, sources=sources, origin=origin,
                                        config_file=config_file, notes=notes)
    # a.json exists beside the config and in the current folder: the config's folder wins;
    # b.json only in the current folder: found there
    assert cfg["train_file"] == [str(experiment / "a.json"), str(cwd / "b.json")]
    assert cfg["image_root"] == str(experiment / "images")
    assert cfg["eval_file"] == "missing.json"  # found nowhere: as written, reported by the run
    assert cfg["tokenizer"] == "bert-base-uncased"  # a hub name
    assert cfg["pretrained"] == "https://example.org/model_base.pth"
    assert cfg["med_config"] == str(REPOSITORY / "configs" / "med_config.json")  # the default, from the repository
    assert f"train_file: a.json -> {experiment / 'a.json'} (relative to the config file's folder)" in notes
    assert f"train_file: b.json -> {cwd / 'b.json'} (relative to the current folder)" in notes
    assert any(n.startswith("eval_file: missing.json not found (relative to the config file's folder") for n in notes)


def test_command_line_values_resolve_against_the_current_folder_first(layout):
    experiment, cwd = layout
    (experiment / "config.yaml").write_text("train_file: a.json\n")
    cfg = load_config(experiment / "config.yaml", ["train_file=a.json"])
    assert cfg["train_file"] == [str(cwd / "a.json")]
    assert load_config(experiment / "config.yaml")["train_file"] == [str(experiment / "a.json")]


def test_repository_relative_configs_work_from_any_folder(layout):
    experiment, _ = layout
    # written like configs/*.yaml: relative to the repository
    (experiment / "config.yaml").write_text("train_file: tests/data/blip_pretrain_state_dict.txt\n"
                                            "med_config: configs/med_config.json\n")
    cfg = load_config(experiment / "config.yaml")
    assert cfg["train_file"] == [str(REPOSITORY / "tests/data/blip_pretrain_state_dict.txt")]
    assert cfg["med_config"] == str(REPOSITORY / "configs/med_config.json")


def test_check_says_which_folder_won_and_shipped_config_runs_from_elsewhere(layout, capsys):
    assert main(["--config", str(REPOSITORY / "configs" / "pretrain.yaml"), "--check"]) == 0
    printed = capsys.readouterr().out
    assert f"med_config: {REPOSITORY / 'configs' / 'med_config.json'}" in printed
    assert "# med_config: configs/med_config.json -> " in printed and "(relative to the repository folder)" in printed


def test_a_run_saved_with_relative_paths_is_the_same_run():
    key = PRETRAIN_SCHEMA["train_file"]
    assert same_setting(key, ["data/x.json"], [os.path.abspath("data/x.json")])
    assert not same_setting(key, ["data/x.json"], [os.path.abspath("data/y.json")])
    assert not same_setting(PRETRAIN_SCHEMA["batch_size"], 4, 8)
    assert same_setting(None, "a", "a")


def test_outputs_stay_relative_to_the_current_folder(layout):
    experiment, _ = layout
    (experiment / "config.yaml").write_text("train_file: a.json\noutput_dir: output/run\n")
    assert load_config(experiment / "config.yaml")["output_dir"] == "output/run"  # written where you run
