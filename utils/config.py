"""YAML configs with a declared schema and ``key=value`` command-line overrides.

BLIP read its YAML into a plain dict and trusted it: a typo (``batch_sise``)
was silently ignored and a wrong type failed hours later. Here every key of
the pretrain config is declared once (type, default, one-line doc) in
:data:`PRETRAIN_SCHEMA`; loading rejects unknown keys with a did-you-mean
suggestion and wrong types with the key and where it came from (file and line,
or the command-line override), and fills in the defaults. The same schema
generates the key table in the README
(``python -m utils.config --markdown``).

The result is a plain ``dict`` of plain values, so it goes into checkpoints
loaded with ``torch.load(weights_only=True)`` and into BLIP's
``checkpoint['config']`` unchanged. Relative paths stay as written: they are
resolved against the working directory by whoever opens them (as in BLIP).
"""

from __future__ import annotations

import argparse
import difflib
import io
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from data.image_io import DEFAULT_MAX_PIXELS
from utils.atomic import atomic_write_text

__all__ = [
    "ConfigError",
    "Key",
    "PRETRAIN_SCHEMA",
    "load_yaml",
    "parse_overrides",
    "apply_overrides",
    "validate_config",
    "load_config",
    "save_config",
    "schema_markdown",
]


class ConfigError(ValueError):
    """A config that cannot be used; the message names the key and its source."""


@dataclass(frozen=True)
class Key:
    """One config key. ``type``: int | float | bool | str | str|mapping | list[str] | list[float]."""

    name: str
    type: str
    default: Any
    doc: str
    nullable: bool = False
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    required: bool = False
    length: int | None = None  # exact length for list types

    def type_text(self) -> str:
        text = " | ".join(map(str, self.choices)) if self.choices else self.type
        return f"{text} | null" if self.nullable else text


_REQUIRED = object()

# Keys of BLIP's configs/pretrain.yaml keep BLIP's meaning and default (the BLIP-base recipe).
PRETRAIN_SCHEMA: tuple[Key, ...] = (
    # data
    Key("train_file", "list[str]", _REQUIRED, "BLIP pretrain JSON list file(s) of {image, caption, ...}; a single path is accepted too.", required=True),
    Key("image_root", "str", None, "Folder that relative image paths resolve against; null: each JSON file's own folder.", nullable=True),
    Key("max_words", "int", 30, "Captions are cut to this many words after BLIP's pre_caption cleaning.", minimum=1),
    Key("max_image_pixels", "int", DEFAULT_MAX_PIXELS, "Images with more pixels are skipped as too_large (decompression-bomb guard).", minimum=1),
    Key("image_size", "int", 224, "Training image side in pixels (ViT input).", minimum=1),
    Key("crop_scale", "list[float]", [0.2, 1.0], "RandomResizedCrop area range [low, high] (BLIP: 0.2-1 for pretraining).", length=2, minimum=0.0, maximum=1.0),
    Key("hflip", "float", 0.0, "Probability of a horizontal flip that also swaps left/right words in the caption; 0 disables.", minimum=0.0, maximum=1.0),
    Key("randaugment", "bool", True, "Apply BLIP's RandomAugment(2, 5) after the crop."),
    Key("num_workers", "int", 4, "DataLoader worker processes per rank (0: load in the training process).", minimum=0),
    Key("eval_file", "str", None, "Optional retrieval-format test list [{image, caption: [...]}] for a quick ITC recall eval after each epoch.", nullable=True),
    # model
    Key("vit", "str|mapping", "base", "Image encoder: base | large | a timm ViT name | {patch_size, embed_dim, depth, num_heads[, mlp_ratio]}."),
    Key("vit_grad_ckpt", "bool", False, "Gradient checkpointing in the ViT blocks."),
    Key("vit_ckpt_layer", "int", 0, "With vit_grad_ckpt: checkpoint the last N ViT blocks (0: none, as BLIP; -1: all).",
        minimum=-1),
    Key("vit_drop_path_rate", "float", 0.0, "Stochastic depth rate of the ViT.", minimum=0.0),
    Key("vit_init", "str", None, "ViT initial weights: a timm pretrained name or a file; null: random init.", nullable=True),
    Key("med_config", "str|mapping", "configs/med_config.json", "BLIP med_config.json-style BERT config of the text encoder/decoder (a path, or the keys inline)."),
    Key("tokenizer", "str", "bert-base-uncased", "WordPiece tokenizer: a local folder or a hub name ([DEC]/[ENC] are added)."),
    Key("text_encoder", "str", "bert-base-uncased", "BERT weights to initialise the text side: a folder or hub name; null: random init.", nullable=True),
    Key("pretrained", "str", None, "A BLIP checkpoint (.pth path or URL) to start from, e.g. BLIP's model_base.pth; null: none.", nullable=True),
    Key("embed_dim", "int", 256, "Dimension of the ITC projection (vision_proj / text_proj).", minimum=1),
    Key("queue_size", "int", 57600, "Momentum feature queue length for ITC.", minimum=1),
    Key("momentum", "float", 0.995, "EMA coefficient of the momentum encoders.", minimum=0.0),
    Key("alpha", "float", 0.4, "Weight of the momentum-distillation soft targets in ITC.", minimum=0.0),
    Key("alpha_rampup_epochs", "float", 2, "alpha ramps linearly from 0 over this many epochs (BLIP: 2); 0: no ramp.", minimum=0.0),
    Key("negative_all_rank", "bool", False, "Draw ITM hard negatives from all ranks (gathered with gradient) instead of the local batch."),
    Key("max_length", "int", 30, "Tokenizer max_length (tokens) for captions.", minimum=2),
    Key("attn_impl", "str", "sdpa", "Attention kernel of the text side: sdpa (fast) or eager (keeps attention maps).", choices=("sdpa", "eager")),
    # optimisation
    Key("batch_size", "int", 75, "Batch size per GPU / process (global batch = batch_size x world size).", minimum=1),
    Key("init_lr", "float", 3e-4, "Peak learning rate (after warmup).", minimum=0.0),
    Key("min_lr", "float", 1e-6, "Floor of the learning-rate decay.", minimum=0.0),
    Key("warmup_lr", "float", 1e-6, "Learning rate at step 0 of the warmup.", minimum=0.0),
    Key("warmup_steps", "int", 3000, "Linear warmup length in optimizer steps (inside epoch 0, as BLIP).", minimum=0),
    Key("lr_decay_rate", "float", 0.9, "Step schedule: lr = max(min_lr, init_lr x rate^epoch).", minimum=0.0),
    Key("lr_schedule", "str", "step", "Per-epoch schedule after warmup: step (BLIP pretraining) or cosine (to min_lr at max_epoch).", choices=("step", "cosine")),
    Key("weight_decay", "float", 0.05, "AdamW weight decay.", minimum=0.0),
    Key("max_epoch", "int", 20, "Number of epochs.", minimum=1),
    Key("precision", "str", "fp32", "fp32, bf16 (autocast) or fp16 (autocast + GradScaler).", choices=("fp32", "bf16", "fp16")),
    Key("grad_accum_steps", "int", 1, "Micro-batches per optimizer step.", minimum=1),
    Key("grad_clip", "float", None, "Clip the global gradient norm to this value; null: no clipping.", nullable=True, minimum=0.0),
    Key("max_nonfinite_steps", "int", 10, "Stop after this many non-finite losses in a row (each one skips its step and is counted).", minimum=1),
    Key("seed", "int", 42, "Seed of model init, shuffling and augmentation (BLIP adds the rank for the model RNG)."),
    # run
    Key("output_dir", "str", "output/pretrain", "Checkpoints, log.txt, loss_curves.png, TensorBoard events and config.yaml go here."),
    Key("save_every", "int", 0, "Also save a checkpoint every N optimizer steps (0: only at the end of each epoch).", minimum=0),
    Key("keep_checkpoints", "int", 3, "Numbered checkpoints kept (oldest pruned); checkpoint_last.pth is always kept; null keeps all.", nullable=True, minimum=0),
    Key("log_every", "int", 50, "Progress-bar, TensorBoard and log.txt step lines every N optimizer steps (0: epoch lines only).", minimum=0),
    Key("device", "str", "auto", "auto (CUDA when available), cpu or cuda.", choices=("auto", "cpu", "cuda")),
)

# BLIP config keys we recognise but do not support, with the reason.
_UNSUPPORTED = {
    "laion_path": "BLIP's LAION-115M webdataset shards are not supported; list the data in train_file",
}

_YAML = YAML(typ="safe", pure=True)
_YAML.default_flow_style = None  # short lists inline, as in BLIP's configs
_YAML.sort_base_mapping_type_on_output = False  # keep the schema order when saving


# -- reading ------------------------------------------------------------------------


def _mark(exc: MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    return f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""


def load_yaml(path: str | Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The top-level mapping of a YAML file and the line of each top-level key.

    Safe loader (YAML 1.2: ``3e-4`` is a float, ``yes`` is a string); duplicate keys are errors.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (IsADirectoryError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc})") from None
    try:
        data = _YAML.load(text)
        node = _YAML.compose(text)
    except MarkedYAMLError as exc:
        problem = exc.problem or exc.context or str(exc)
        raise ConfigError(f"{path}{_mark(exc)}: invalid YAML: {problem}") from None
    except YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value at the top level, got {type(data).__name__}")
    lines = {k.value: k.start_mark.line + 1 for k, _ in node.value} if node is not None else {}
    return data, lines


def parse_overrides(args: Iterable[str]) -> list[tuple[str, Any]]:
    """``["batch_size=32", "train_file=[a.json, b.json]", "model.depth=2"]`` -> (key, value) pairs.

    Values are parsed as YAML (``32`` int, ``3e-4`` float, ``null``, ``[a, b]`` list, ``true``).
    """
    pairs = []
    for arg in args:
        key, sep, raw = arg.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"command-line override {arg!r} is not of the form key=value")
        try:
            value = _YAML.load(raw) if raw.strip() else None
        except YAMLError as exc:
            raise ConfigError(f"command-line override {arg!r}: value is not valid YAML ({exc})") from None
        pairs.append((key, value))
    return pairs


def apply_overrides(config: dict[str, Any], overrides: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Set each (possibly dotted) key in place; ``a.b=1`` creates or updates ``config['a']['b']``."""
    for key, value in overrides:
        parts = key.split(".")
        node = config
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(
                    f"command-line override {key}=...: {'.'.join(parts[: depth + 1])} is not a mapping"
                )
            node = child
        node[parts[-1]] = value
    return config


# -- validation -----------------------------------------------------------------------


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _coerce(key: Key, value: Any) -> Any:
    """The value in the key's type, or raise ValueError with what is wrong (no key name)."""
    if value is None:
        if key.nullable:
            return None
        raise ValueError("must not be null")
    kind = key.type
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, got {_describe(value)}")
        return value
    if kind in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"must be {'an integer' if kind == 'int' else 'a number'}, got {_describe(value)}")
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(f"must be an integer, got {value!r}")
            value = int(value)
        else:
            value = float(value)
        if key.minimum is not None and value < key.minimum:
            raise ValueError(f"must be >= {key.minimum:g}, got {value!r}")
        if key.maximum is not None and value > key.maximum:
            raise ValueError(f"must be <= {key.maximum:g}, got {value!r}")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise ValueError(f"must be a string, got {_describe(value)}")
        if key.choices and value not in key.choices:
            raise ValueError(f"must be one of {', '.join(key.choices)}, got {value!r}")
        return value
    if kind == "str|mapping":
        if isinstance(value, str):
            return value
        if isinstance(value, dict):
            return {str(k): _copy(v) for k, v in value.items()}
        raise ValueError(f"must be a string or a mapping, got {_describe(value)}")
    if kind.startswith("list["):
        inner = kind[5:-1]
        if isinstance(value, str) and inner == "str":
            value = [value]
        if not isinstance(value, list):
            raise ValueError(f"must be a list of {inner}, got {_describe(value)}")
        item_key = Key(key.name, inner, None, "", minimum=key.minimum, maximum=key.maximum)
        try:
            items = [_coerce(item_key, v) for v in value]
        except ValueError as exc:
            raise ValueError(f"items {exc}") from None
        if key.length is not None and len(items) != key.length:
            raise ValueError(f"must have {key.length} items, got {len(items)}")
        if key.required and not items:
            raise ValueError("must not be empty")
        return items
    raise AssertionError(f"unknown schema type {kind!r}")


def validate_config(
    config: Mapping[str, Any],
    schema: Sequence[Key] = PRETRAIN_SCHEMA,
    *,
    sources: Mapping[str, str] | None = None,
    origin: str = "config",
) -> dict[str, Any]:
    """Check every key against ``schema``, fill defaults, return a new plain dict in schema order.

    ``sources`` maps a key to where it was set (``file:line`` or ``command-line override``) for
    error messages; ``origin`` names the whole config (its file) for missing keys.
    """
    sources = dict(sources or {})
    by_name = {key.name: key for key in schema}
    for name in config:
        if name not in by_name:
            where = sources.get(name, origin)
            if name in _UNSUPPORTED:
                raise ConfigError(f"{where}: key {name!r} is not supported: {_UNSUPPORTED[name]}")
            close = difflib.get_close_matches(name, by_name, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where}: unknown config key {name!r}{hint}")
    out: dict[str, Any] = {}
    for key in schema:
        if key.name not in config:
            if key.required:
                raise ConfigError(f"{origin}: missing required key {key.name!r} ({key.doc})")
            out[key.name] = _copy(key.default)
            continue
        try:
            out[key.name] = _coerce(key, config[key.name])
        except ValueError as exc:
            raise ConfigError(f"{sources.get(key.name, origin)}: key {key.name!r} {exc}") from None
    if out.get("crop_scale") is not None and not 0 < out["crop_scale"][0] <= out["crop_scale"][1]:
        where = sources.get("crop_scale", origin)
        raise ConfigError(f"{where}: key 'crop_scale' must be [low, high] with 0 < low <= high, got {out['crop_scale']}")
    return out


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def load_config(
    path: str | Path | None,
    overrides: Iterable[str] = (),
    schema: Sequence[Key] = PRETRAIN_SCHEMA,
) -> dict[str, Any]:
    """Read ``path`` (or nothing), apply ``key=value`` overrides, validate against ``schema``."""
    if path is not None:
        config, lines = load_yaml(path)
        sources = {name: f"{path}:{line}" for name, line in lines.items()}
        origin = str(path)
    else:
        config, sources, origin = {}, {}, "config"
    pairs = parse_overrides(overrides)
    apply_overrides(config, pairs)
    for key, _ in pairs:
        top = key.split(".")[0]
        sources[top] = f"command-line override {key}=..."
    return validate_config(config, schema, sources=sources, origin=origin)


def save_config(config: Mapping[str, Any], path: str | Path) -> None:
    """Write the resolved config as YAML (atomically), e.g. ``output_dir/config.yaml`` as BLIP does."""
    buf = io.StringIO()
    _YAML.dump(dict(config), buf)
    atomic_write_text(path, buf.getvalue())


def schema_markdown(schema: Sequence[Key] = PRETRAIN_SCHEMA) -> str:
    """The key table for the docs: key, type, default, meaning."""
    rows = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for key in schema:
        default = "(required)" if key.required else _yaml_scalar(key.default)
        cells = (key.type_text(), key.doc)
        type_text, doc = (c.replace("|", "\\|") for c in cells)  # a bare | would split the table cell
        rows.append(f"| `{key.name}` | {type_text} | `{default}` | {doc} |")
    return "\n".join(rows) + "\n"


def _yaml_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_scalar(v) for v in value) + "]"
    return str(value)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.config", description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--markdown", action="store_true", help="print the pretrain config key table")
    group.add_argument("--check", metavar="FILE", help="validate FILE (plus overrides) and print the resolved config")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(schema_markdown())
        return 0
    try:
        config = load_config(args.check, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _YAML.dump(config, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
