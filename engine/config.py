"""YAML configs with a declared schema and ``key=value`` command-line overrides.

BLIP read its YAML into a plain dict and trusted it: a typo (``batch_sise``)
was silently ignored and a wrong type failed hours later. Here every key of a
task's config is declared once (type, default, one-line doc) in its
:class:`Schema` (the task's data and model keys, then :data:`ENGINE_KEYS`);
loading rejects unknown keys with a did-you-mean suggestion and wrong types
with the key and where it came from (file and line, or the command-line
override), and fills in the defaults. The same schema generates the key table
in the README (``python pretrain.py --config_table``).

The result is a plain ``dict`` of plain values, so it goes into checkpoints
loaded with ``torch.load(weights_only=True)`` and into BLIP's
``checkpoint['config']`` unchanged. Relative paths of the keys that name
inputs are resolved once, at load, by :func:`resolve_config_paths`: values from
a config file against the file's folder, then the repository folder, then the
current folder; command-line values against the current folder first; the first
that exists wins and is stored as an absolute path (``--check`` says which won).
"""

from __future__ import annotations

import difflib
import io
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from utils.atomic import atomic_write_text
from utils.errors import ConfigError

__all__ = [
    "ConfigError",
    "Key",
    "ENGINE_KEYS",
    "OPERATIONAL_KEYS",
    "Schema",
    "with_defaults",
    "load_yaml",
    "parse_overrides",
    "apply_overrides",
    "validate_config",
    "load_config",
    "resolve_config_paths",
    "same_setting",
    "save_config",
    "schema_markdown",
]


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
    # Extra rule: what is wrong (read after "key 'name'"), a list of self-contained problems
    # (nested keys: "key 'vit': unknown key 'depht'; ..."), or None.
    check: Callable[[Any], str | list[str] | None] | None = None
    # "input": a file or folder the run reads; "source": an input, or a hub / timm name or URL.
    # Relative paths resolve by the rule of resolve_config_paths (README, "Paths in configs").
    path: str | None = None

    def type_text(self) -> str:
        text = " | ".join(map(str, self.choices)) if self.choices else self.type
        return f"{text} | null" if self.nullable else text


_REQUIRED = object()

# Keys every training task shares: optimisation, precision, run bookkeeping. A task's schema
# is its data and model keys followed by these (BLIP's names and BLIP-base defaults).
ENGINE_KEYS: tuple[Key, ...] = (
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
    Key("grad_accum_steps", "int", 1, "Micro-batches per optimizer step (changes the in-batch negatives: see the README).", minimum=1),
    Key("grad_clip", "float", None, "Clip the global gradient norm to this value; null: no clipping.", nullable=True, minimum=0.0),
    Key("max_nonfinite_steps", "int", 10, "Stop after this many non-finite losses in a row (each one skips its step and is counted; checked every 10 steps).", minimum=1),
    Key("seed", "int", 42, "Seed of model init, shuffling and augmentation (BLIP adds the rank for the model RNG)."),
    # run
    Key("output_dir", "str", "output/pretrain", "Checkpoints, log.txt, loss_curves.png, TensorBoard events and config.yaml go here."),
    Key("save_every", "int", 0, "Also save a checkpoint every N optimizer steps (0: only at the end of each epoch).", minimum=0),
    Key("keep_checkpoints", "int", 3, "Numbered checkpoints kept (oldest pruned); checkpoint_last.pth is always kept; null keeps all.", nullable=True, minimum=0),
    Key("log_every", "int", 50, "Progress-bar, TensorBoard and log.txt step lines every N optimizer steps (0: epoch lines only).", minimum=0),
    Key("device", "str", "auto", "auto (CUDA when available), cpu or cuda.", choices=("auto", "cpu", "cuda")),
)

def with_defaults(keys: Sequence[Key], **defaults: Any) -> tuple[Key, ...]:
    """``keys`` with other defaults (a task's recipe: BLIP's retrieval fine-tuning uses init_lr 1e-5...)."""
    names = {key.name for key in keys}
    unknown = set(defaults) - names
    if unknown:
        raise KeyError(f"no such keys: {sorted(unknown)}")
    return tuple(replace(key, default=defaults[key.name]) if key.name in defaults else key for key in keys)


# Keys that only steer how a run executes, not what it computes: they may change on --resume.
OPERATIONAL_KEYS = frozenset({
    "num_workers", "output_dir", "save_every", "keep_checkpoints", "log_every", "device", "max_epoch",
    "max_nonfinite_steps", "eval_file", "k_test", "batch_size_test",
})


@dataclass(frozen=True)
class Schema:
    """A task's config: its keys in order, and BLIP keys it recognises but rejects (with the reason)."""

    name: str
    keys: tuple[Key, ...]
    unsupported: Mapping[str, str] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)  # BLIP key -> our key, same meaning
    # Rules between keys (e.g. one data source): the validated config -> what is wrong, or None.
    check: Callable[[Mapping[str, Any]], str | None] | None = None

    def __iter__(self):
        return iter(self.keys)

    def __getitem__(self, name: str) -> Key:
        for key in self.keys:
            if key.name == name:
                return key
        raise KeyError(name)


_YAML = YAML(typ="safe", pure=True)
_YAML.default_flow_style = None  # short lists inline, as in BLIP's configs
_YAML.sort_base_mapping_type_on_output = False  # keep the schema order when saving
_YAML.width = 4096  # absolute paths stay on their key's line (--check output is read and grepped)


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
    schema: Schema,
    *,
    sources: Mapping[str, str] | None = None,
    origin: str = "config",
    config_file: str | Path | None = None,
    notes: list[str] | None = None,
) -> dict[str, Any]:
    """Check every key against ``schema``, fill defaults, return a new plain dict in schema order.

    ``sources`` maps a key to where it was set (``file:line`` or ``command-line override``) for
    error messages; ``origin`` names the whole config (its file) for missing keys. BLIP keys
    with another name here (``schema.aliases``) are renamed first. Paths are resolved
    (:func:`resolve_config_paths`, against ``config_file``'s folder first) before the keys'
    own checks run; what was resolved goes to ``notes``. Every problem is collected and
    raised together in one :class:`ConfigError`, one line each.
    """
    sources = dict(sources or {})
    config = dict(config)
    errors: list[str] = []
    for blip_name, name in schema.aliases.items():
        if blip_name in config:
            if name in config:
                errors.append(f"{sources.get(blip_name, origin)}: give {blip_name!r} or {name!r}, not both "
                              "(they are the same setting)")
                continue
            config[name] = config.pop(blip_name)
            if blip_name in sources:
                sources[name] = sources[blip_name]
    by_name = {key.name: key for key in schema}
    for name in config:
        if name not in by_name:
            where = sources.get(name, origin)
            if name in schema.unsupported:
                errors.append(f"{where}: key {name!r} is not supported: {schema.unsupported[name]}")
                continue
            close = difflib.get_close_matches(name, list(by_name) + list(schema.aliases), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            errors.append(f"{where}: unknown config key {name!r}{hint}")
    out: dict[str, Any] = {}
    for key in schema:
        if key.name not in config:
            if key.required:
                errors.append(f"{origin}: missing required key {key.name!r} ({key.doc})")
            out[key.name] = _copy(key.default)
            continue
        try:
            out[key.name] = _coerce(key, config[key.name])
        except ValueError as exc:
            errors.append(f"{sources.get(key.name, origin)}: key {key.name!r} {exc}")
            out[key.name] = None  # not checked further
    path_notes = resolve_config_paths(out, schema, config_file=config_file, sources=sources)
    if notes is not None:
        notes.extend(path_notes)
    for key in schema:
        value = out[key.name]
        if key.check is None or value is None:  # None: unset, or a type error already reported
            continue
        problem = key.check(value)
        where = sources.get(key.name, origin)
        if isinstance(problem, list):
            errors.extend(f"{where}: {item}" for item in problem)
        elif problem:
            errors.append(f"{where}: key {key.name!r} {problem}")
    if not errors and schema.check is not None:  # cross-key rules, once every key is valid on its own
        problem = schema.check(out)
        if problem:
            errors.append(f"{origin}: {problem}")
    if errors:
        raise ConfigError("\n".join(errors) if len(errors) == 1 else
                          f"{len(errors)} problems in {origin}:\n" + "\n".join(f"  {e}" for e in errors))
    return out


# -- paths ----------------------------------------------------------------------------


def same_setting(key: Key | None, saved: Any, now: Any) -> bool:
    """Whether a saved run's value and today's mean the same: path keys compare as absolute paths,
    so a run saved with ``data/x.json`` (before paths were resolved at load) matches ``/repo/data/x.json``."""
    if key is None or key.path is None or saved == now:
        return saved == now

    def absolute(value: Any) -> Any:
        if isinstance(value, list):
            return [absolute(v) for v in value]
        return os.path.abspath(value) if isinstance(value, str) and "://" not in value else value

    return absolute(saved) == absolute(now)


REPOSITORY = Path(__file__).resolve().parents[1]


def _path_bases(set_where: str | None, config_file: Path | None) -> list[tuple[str, Path]]:
    """Where a relative path may be relative to, in the order tried."""
    cwd = ("the current folder", Path.cwd())
    repository = ("the repository folder", REPOSITORY)
    if set_where is None:  # a default: written relative to the repository (configs/med_config.json)
        return [repository, cwd]
    if set_where.startswith("command-line") or config_file is None:
        return [cwd, repository]
    return [("the config file's folder", Path(os.path.abspath(config_file)).parent), repository, cwd]


def resolve_config_paths(config: dict[str, Any], schema: Schema, *, config_file: str | Path | None = None,
                         sources: Mapping[str, str] | None = None) -> list[str]:
    """Make the relative paths of ``path`` keys absolute, in place; return what happened, one line each.

    A value from a config file is looked for relative to the file's folder, then the
    repository folder, then the current folder; a command-line value relative to the
    current folder, then the repository folder; a default relative to the repository
    folder, then the current folder. The first that exists wins. One that exists nowhere
    stays as written (a hub or timm name, or a file the run will report missing). URLs,
    absolute paths and ``~`` paths are kept. Outputs (``output_dir``) are not touched:
    they are written relative to the current folder.
    """
    sources = sources or {}
    notes = []
    for key in schema:
        value = config.get(key.name)
        if key.path is None or value is None or isinstance(value, dict):
            continue
        bases = _path_bases(sources.get(key.name), Path(config_file) if config_file is not None else None)
        resolved = []
        for item in value if isinstance(value, list) else [value]:
            if not isinstance(item, str) or not item or "://" in item or Path(item).expanduser().is_absolute():
                resolved.append(item)
                continue
            for label, base in bases:
                candidate = base / item
                if candidate.exists():
                    resolved.append(os.path.abspath(candidate))
                    notes.append(f"{key.name}: {item} -> {resolved[-1]} (relative to {label})")
                    break
            else:
                resolved.append(item)
                if key.path == "input":
                    tried = ", ".join(f"{label} {base}" for label, base in bases)
                    notes.append(f"{key.name}: {item} not found (relative to {tried})")
        config[key.name] = resolved if isinstance(value, list) else resolved[0]
    return notes


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def load_config(
    path: str | Path | None,
    overrides: Iterable[str] = (),
    schema: Schema | None = None,
) -> dict[str, Any]:
    """Read ``path`` (or nothing), apply ``key=value`` overrides, validate against ``schema``."""
    if schema is None:
        raise TypeError("load_config needs the task's schema (e.g. tasks.pretrain.PRETRAIN_SCHEMA)")
    config, sources, origin = read_config_sources(path, overrides)
    return validate_config(config, schema, sources=sources, origin=origin, config_file=path)


def read_config_sources(
    path: str | Path | None, overrides: Iterable[str] = ()
) -> tuple[dict[str, Any], dict[str, str], str]:
    """(raw config with overrides applied, where each top-level key was set, the origin's name)."""
    if path is not None:
        config, lines = load_yaml(path)
        sources = {name: f"{path}:{line}" for name, line in lines.items()}
        origin = str(path)
    else:
        config, sources, origin = {}, {}, "config"
    pairs = parse_overrides(overrides)
    apply_overrides(config, pairs)
    overridden: dict[str, list[str]] = {}
    for key, _ in pairs:
        top = key.split(".")[0]
        if top == key:  # the whole value replaced: only the command line counts
            overridden[top] = [f"{key}=..."]
            sources.pop(top, None)
        else:
            overridden.setdefault(top, []).append(f"{key}=...")
    for top, settings in overridden.items():
        word = "override" if len(settings) == 1 else "overrides"
        where = f"command-line {word} {', '.join(settings)}"
        sources[top] = f"{sources[top]} with {where}" if top in sources else where
    return config, sources, origin


def save_config(config: Mapping[str, Any], path: str | Path) -> None:
    """Write the resolved config as YAML (atomically), e.g. ``output_dir/config.yaml`` as BLIP does."""
    buf = io.StringIO()
    _YAML.dump(dict(config), buf)
    atomic_write_text(path, buf.getvalue())


def schema_markdown(schema: Schema) -> str:
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
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml_scalar(v)}" for k, v in value.items()) + "}"
    return str(value)


def dump_config(config: Mapping[str, Any], stream: Any) -> None:
    """Write ``config`` as YAML (the format of ``output_dir/config.yaml``) to an open text stream."""
    _YAML.dump(dict(config), stream)
