"""Config loading: schema defaults, overrides, clear errors with key and source; shipped configs valid."""

import json
from pathlib import Path

import pytest

import functools

import engine.config
from engine.config import ConfigError, apply_overrides, parse_overrides, save_config, schema_markdown
from pretrain import main
from tasks.pretrain import PRETRAIN_SCHEMA

load_config = functools.partial(engine.config.load_config, schema=PRETRAIN_SCHEMA)

REPO = Path(__file__).resolve().parents[1]
BLIP_KEYS = [
    "train_file", "image_size", "batch_size", "queue_size", "alpha", "weight_decay", "init_lr", "min_lr",
    "warmup_lr", "lr_decay_rate", "max_epoch", "warmup_steps", "vit", "vit_grad_ckpt", "vit_ckpt_layer", "laion_path",
]


def _write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_minimal_config_gets_blip_base_defaults(tmp_path):
    cfg = load_config(_write(tmp_path, "train_file: ['a.json']\n"))
    assert cfg["train_file"] == ["a.json"]
    expected = dict(image_size=224, batch_size=75, queue_size=57600, alpha=0.4, weight_decay=0.05, init_lr=3e-4,
                    min_lr=1e-6, warmup_lr=1e-6, lr_decay_rate=0.9, max_epoch=20, warmup_steps=3000, vit="base",
                    vit_grad_ckpt=False, vit_ckpt_layer=0, embed_dim=256, momentum=0.995, max_words=30,
                    max_length=30, alpha_rampup_epochs=2.0, crop_scale=[0.2, 1.0], hflip=0.0, seed=42)
    for key, value in expected.items():
        assert cfg[key] == value, key
    assert list(cfg) == [k.name for k in PRETRAIN_SCHEMA]  # every key present, schema order


def test_blip_style_yaml_values_parse(tmp_path):
    # BLIP writes 3e-4 (no dot): YAML 1.2 reads it as a float; 57600.0 is accepted as an integer
    cfg = load_config(_write(tmp_path, "train_file: x.json\ninit_lr: 3e-4\nqueue_size: 57600.0\nalpha_rampup_epochs: 1\n"))
    assert cfg["init_lr"] == pytest.approx(3e-4) and isinstance(cfg["init_lr"], float)
    assert cfg["queue_size"] == 57600 and isinstance(cfg["queue_size"], int)
    assert cfg["train_file"] == ["x.json"]  # a single path becomes a list


def test_overrides_parse_as_yaml_and_win(tmp_path):
    path = _write(tmp_path, "train_file: ['a.json']\nbatch_size: 8\n")
    cfg = load_config(path, ["batch_size=32", "train_file=[b.json, c.json]", "grad_clip=1.5", "pretrained=null",
                             "vit_grad_ckpt=true", "init_lr=1e-4"])
    assert cfg["batch_size"] == 32 and cfg["train_file"] == ["b.json", "c.json"]
    assert cfg["grad_clip"] == 1.5 and cfg["pretrained"] is None and cfg["vit_grad_ckpt"] is True
    assert cfg["init_lr"] == pytest.approx(1e-4)
    assert load_config(None, ["train_file=a.json"])["train_file"] == ["a.json"]


def test_dotted_overrides_reach_nested_dicts():
    cfg = {"model": {"depth": 2, "width": 8}}
    apply_overrides(cfg, parse_overrides(["model.depth=4", "model.extra.x=[1, 2]"]))
    assert cfg == {"model": {"depth": 4, "width": 8, "extra": {"x": [1, 2]}}}
    with pytest.raises(ConfigError, match="model.depth is not a mapping"):
        apply_overrides(cfg, parse_overrides(["model.depth.x=1"]))


def test_unknown_key_gets_a_suggestion_with_file_and_line(tmp_path):
    path = _write(tmp_path, "train_file: a.json\n\nbatch_sise: 4\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:3: unknown config key 'batch_sise'; did you mean 'batch_size'\?"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"command-line override queue_sz=\.\.\..*did you mean 'queue_size'"):
        load_config(None, ["train_file=a", "queue_sz=4"])
    with pytest.raises(ConfigError, match="unknown config key 'zzz'$"):
        load_config(None, ["train_file=a", "zzz=1"])
    old_keys = engine.config.Schema("t", (engine.config.Key("a", "int", 1, "a"),), unsupported={"b": "use a"})
    with pytest.raises(ConfigError, match=r"l\.yaml:2: key 'b' is not supported: use a"):
        engine.config.load_config(_write(tmp_path, "a: 2\nb: 3\n", "l.yaml"), schema=old_keys)


@pytest.mark.parametrize(
    "line, match",
    [
        ("batch_size: abc", r"c\.yaml:2: key 'batch_size' must be an integer, got str 'abc'"),
        ("batch_size: 2.5", "must be an integer, got 2.5"),
        ("batch_size: 0", "must be >= 1"),
        ("vit_grad_ckpt: yes", "must be true or false, got str 'yes'"),
        ("alpha: true", "must be a number, got bool True"),
        ("crop_scale: [0.2]", "must have 2 items"),
        ("crop_scale: [0.2, x]", "items must be a number"),
        ("precision: fp8", "must be one of fp32, bf16, fp16"),
        ("crop_scale: [0.8, 0.5]", "crop_scale' must be \\[low, high\\]"),
        ("crop_scale: [0.2, 1.5]", "items must be <= 1"),
        ("hflip: 2", "must be <= 1"),
        ("vit: null", "must not be null"),
        ("train_file: []", "no training data: set train_file"),
    ],
)
def test_wrong_types_name_key_and_file(tmp_path, line, match):
    text = f"train_file: a.json\n{line}\n" if not line.startswith("train_file") else line + "\n"
    with pytest.raises(ConfigError, match=match):
        load_config(_write(tmp_path, text))


def test_file_level_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"c\.yaml: no training data: set train_file"):
        load_config(_write(tmp_path, "batch_size: 4\n"))
    with pytest.raises(ConfigError, match=r"bad\.yaml:2:\d+: invalid YAML"):
        load_config(_write(tmp_path, "train_file: [a.json\nbatch_size: 4\n", "bad.yaml"))
    with pytest.raises(ConfigError, match=r"dup\.yaml:2:1: invalid YAML: found duplicate key"):
        load_config(_write(tmp_path, "batch_size: 4\nbatch_size: 5\n", "dup.yaml"))
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(_write(tmp_path, "- a\n- b\n", "list.yaml"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not of the form key=value"):
        parse_overrides(["batch_size"])


def test_save_roundtrip(tmp_path):
    cfg = load_config(None, ["train_file=[a.json]", "grad_clip=2.0"])
    save_config(cfg, tmp_path / "out" / "config.yaml")
    assert load_config(tmp_path / "out" / "config.yaml") == cfg


def test_shipped_configs_are_valid_and_med_config_is_blips():
    cfg = load_config(REPO / "configs" / "pretrain.yaml")
    assert (cfg["vit"], cfg["image_size"], cfg["batch_size"], cfg["queue_size"], cfg["precision"]) == (
        "base", 224, 75, 57600, "bf16")
    text = (REPO / "configs" / "pretrain.yaml").read_text()
    for key in BLIP_KEYS:  # BLIP's keys are spelled out in the reference config
        assert f"\n{key}:" in text, key
    med = json.loads((REPO / cfg["med_config"]).read_text())
    assert {k: med[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                               "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob",
                               "layer_norm_eps", "max_position_embeddings", "vocab_size", "pad_token_id",
                               "encoder_width", "add_cross_attention", "type_vocab_size")} == {
        "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "vocab_size": 30524, "pad_token_id": 0,
        "encoder_width": 768, "add_cross_attention": True, "type_vocab_size": 2}
    for path in (REPO / "configs").glob("pretrain*.yaml"):
        load_config(path)  # every shipped pretrain config passes the schema


def test_docs_cover_every_key_and_carry_the_generated_table():
    docs = (REPO / "README.md").read_text()
    for key in PRETRAIN_SCHEMA:
        assert f"`{key.name}`" in docs, key.name
    assert schema_markdown(PRETRAIN_SCHEMA) in docs, "README.md is stale: paste `python pretrain.py --config_table`"


def test_cli(tmp_path, capsys):
    assert main(["--config_table"]) == 0
    assert "| `queue_size` | int | `57600` |" in capsys.readouterr().out
    path = _write(tmp_path, "train_file: a.json\n")
    assert main(["--config", str(path), "--check", "batch_size=3"]) == 0
    assert "batch_size: 3" in capsys.readouterr().out
    assert main(["--config", str(path), "--check", "batch_size=x"]) == 2
    assert "key 'batch_size'" in capsys.readouterr().err
    # flags may come between and after overrides
    assert main(["--config", str(path), "batch_size=5", "--check", "seed=9"]) == 0
    printed = capsys.readouterr().out
    assert "batch_size: 5" in printed and "seed: 9" in printed


def test_docs_carry_the_generated_retrieval_table():
    from tasks.retrieval import RETRIEVAL_SCHEMA

    docs = (REPO / "README.md").read_text()
    assert schema_markdown(RETRIEVAL_SCHEMA) in docs, "README.md is stale: paste `python train_retrieval.py --config_table`"
