"""BLIP pretraining as an engine task: ITC (momentum distillation) + ITM (hard negatives) + LM.

The config keys are BLIP's ``configs/pretrain.yaml`` keys with their meaning and
BLIP-base defaults, plus ours (README, "Config keys"). Each epoch can end with a
zero-shot ITC retrieval check on ``eval_file``, printed next to chance.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import torch

from data.laion_parts import LaionPartsData
from data.pretrain_dataset import build_pretrain_dataset, build_pretrain_loader
from data.shards.dataset import ShardTrainingData, build_shard_training_data
from data.retrieval_dataset import RetrievalEvalDataset
from data.transforms import build_image_transform
from engine.config import ENGINE_KEYS, Key, Schema
from engine.task import StepContext, TrainData
from models.blip_pretrain import BlipPretrain
from models.tokenizer import load_tokenizer
from models.retrieval_eval import EVAL_MAX_LENGTH, chance_recall, evaluate_retrieval
from tasks.common import build_task_model, image_keys, model_keys, tokenizer_fit_warning

__all__ = ["PRETRAIN_SCHEMA", "PretrainTask", "alpha_at", "small_eval_warning", "run_pretraining"]



def positive_weights_problem(weights: list[float]) -> str | None:
    return None if all(w > 0 for w in weights) else f"must all be > 0, got {weights}"


def data_source_problem(config: Mapping[str, Any]) -> str | None:
    """One source of training data: JSON lists (train_file, optionally laion_path) or prepared shards."""
    json_keys = [k for k in ("train_file", "laion_path") if config.get(k)]
    if config["train_shards"]:
        if json_keys:
            return (f"give train_shards or {' and '.join(json_keys)}, not both; to train on both, prepare the JSON "
                    "lists into shards too (python -m data.prepare shards LIST.json --out DIR) and list every "
                    "manifest in train_shards")
        weights = config.get("shard_weights")
        if weights is not None and len(weights) != len(config["train_shards"]):
            return (f"shard_weights has {len(weights)} weight(s) for {len(config['train_shards'])} train_shards "
                    "manifest(s); give one per manifest, in the same order")
        return None
    if not json_keys:
        return ("no training data: set train_file (JSON lists), laion_path (BLIP's folder of JSON list parts) "
                "or train_shards (manifests of python -m data.prepare)")
    shard_only = [k for k in ("shard_weights", "epoch_samples") if config.get(k) is not None]
    if shard_only:
        return f"{' and '.join(shard_only)} apply to train_shards only, which is not set"
    return None

PRETRAIN_SCHEMA = Schema(
    name="pretrain",
    keys=(
        # data
        Key("train_file", "list[str]", [], "BLIP pretrain JSON list file(s) of {image, caption, ...}; a single path is accepted too. Give train_file (with or without laion_path) or train_shards.", path="input"),
        Key("laion_path", "str", None, "BLIP's laion_path: a folder of JSON list parts; epoch e trains on all of train_file plus part e mod n (parts sorted by name); null or '' (BLIP's default): none.", nullable=True, path="input"),
        Key("image_root", "str", None, "Folder that relative image paths resolve against; null: each JSON file's own folder.", nullable=True, path="input"),
        Key("train_shards", "list[str]", [], "Prepared shard manifests (python -m data.prepare), one per source, instead of train_file and laion_path.", path="input"),
        Key("shard_weights", "list[float]", None, "train_shards only: mixing weight per manifest (same order); null: every sample once per epoch.", nullable=True, check=positive_weights_problem),
        Key("epoch_samples", "int", None, "train_shards only: samples per epoch over all ranks; null: all samples of the manifests.", nullable=True, minimum=1),
        Key("shard_lanes", "int", 64, "train_shards only: places in the data a global batch draws from (the shards read at once per rank: lanes / world size).", minimum=1),
        Key("shuffle_buffer", "int", 10000, "train_shards only: samples shuffled together inside each lane (a block shuffle; more: better mixing, more shards open).", minimum=1),
        Key("max_words", "int", 30, "Captions are cut to this many words after BLIP's pre_caption cleaning.", minimum=1),
        *image_keys(224, [0.2, 1.0]),
        Key("eval_file", "str", None, "Optional retrieval-format test list [{image, caption: [...]}] for a quick ITC recall eval after each epoch.", nullable=True, path="input"),
        # model
        *model_keys(max_length=30, alpha_rampup=(
            Key("alpha_rampup_epochs", "float", 2, "alpha ramps linearly from 0 over this many epochs (BLIP: 2); 0: no ramp.", minimum=0.0),
        )),
        *ENGINE_KEYS,
    ),
    check=data_source_problem,
)


def alpha_at(config: Mapping[str, Any], epoch: int, step: int, steps_per_epoch: int) -> float:
    """BLIP: alpha ramps linearly from 0 over the first ``alpha_rampup_epochs`` epochs."""
    ramp = float(config["alpha_rampup_epochs"])
    if ramp <= 0:
        return float(config["alpha"])
    progress = (epoch * steps_per_epoch + step) / (ramp * steps_per_epoch)
    return float(config["alpha"]) * min(1.0, progress)


def small_eval_warning(chance: Mapping[str, float], where: str) -> str | None:
    """A warning when a random ranking already scores >= 50% at some K: such recall says little."""
    high = {k: v for k, v in chance.items() if v >= 50.0}
    if not high:
        return None
    shown = ", ".join(f"{k} {v:.0f}%" for k, v in sorted(high.items()))
    return (f"warning: {where} is too small for recall to mean much: a random ranking already scores {shown}; "
            "use a larger evaluation set")


def data_source_message(config: Mapping[str, Any], data: TrainData) -> str:
    """One log line: where the training samples come from."""
    if isinstance(data, ShardTrainingData):
        manifests = data.dataset.manifests
        shards = sum(len(m.shards) for m in manifests)
        weights = config["shard_weights"]
        sources = ", ".join(f"{m.source} ({sum(s.samples for s in m.shards)} samples"
                            + (f", weight {weights[i]:g})" if weights else ")") for i, m in enumerate(manifests))
        return (f"training data: {shards} shard(s) of {len(manifests)} source(s): {sources}; "
                f"{data.samples_per_epoch} samples per epoch, {config['shard_lanes']} lanes, "
                f"shuffle_buffer {config['shuffle_buffer']}")
    if isinstance(data, LaionPartsData):
        names = ", ".join(p.name for p in data.parts)
        return (f"training data: {len(config['train_file'])} train_file list(s) plus laion_path "
                f"{config['laion_path']}: {len(data.parts)} part(s) ({names}); epoch e uses part e mod "
                f"{len(data.parts)}")
    return f"training data: {len(config['train_file'])} train_file list(s)"


class PretrainTask:
    """What the engine needs for pretraining (see ``engine/task.py``)."""

    name = "pretrain"
    schema = PRETRAIN_SCHEMA
    best_metric = None

    def __init__(self) -> None:
        self._eval_set: RetrievalEvalDataset | None = None

    def build_model(self, config: Mapping[str, Any], device: torch.device) -> BlipPretrain:
        model = build_task_model("pretrain", config, device)
        self._tokenizer = model.tokenizer
        return model

    def build_train_data(self, config: Mapping[str, Any], device: torch.device) -> TrainData:
        """JSON lists (train_file), plus BLIP's per-epoch laion_path part, or prepared shards (train_shards)."""
        tokenizer = getattr(self, "_tokenizer", None) or load_tokenizer(config["tokenizer"])
        loader_args = dict(batch_size=config["batch_size"], num_workers=config["num_workers"], seed=config["seed"],
                           pin_memory=device.type == "cuda", tokenizer=tokenizer, max_length=config["max_length"])
        if config["train_shards"]:
            data: TrainData = build_shard_training_data(config, tokenizer=tokenizer,
                                                        pin_memory=loader_args["pin_memory"])
        elif config["laion_path"]:
            data = LaionPartsData(config["train_file"], config["laion_path"],
                                  functools.partial(build_pretrain_dataset, config), **loader_args)
        else:
            data = build_pretrain_loader(build_pretrain_dataset(config), **loader_args)
        if config.get("eval_file"):  # read now: a broken evaluation file fails before any training
            self._eval_set = RetrievalEvalDataset(
                config["eval_file"], build_image_transform("test", config["image_size"]),
                image_root=config.get("image_root"), max_words=config["max_words"],
                max_pixels=config["max_image_pixels"])
        return data

    def setup_messages(self, config: Mapping[str, Any], data: TrainData) -> list[str]:
        messages = [data_source_message(config, data)]
        fit = tokenizer_fit_warning(self._tokenizer, data, config["max_length"])
        if fit:
            messages.append(fit)
        if self._eval_set is not None:
            chance = chance_recall(self._eval_set.img2txt, len(self._eval_set.texts))
            warning = small_eval_warning(chance, f"eval_file {config['eval_file']} ({len(self._eval_set)} images)")
            if warning:
                messages.append(warning)
        return messages

    def forward(self, model: torch.nn.Module, batch: Mapping[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        alpha = alpha_at(ctx.config, ctx.epoch, ctx.step_in_epoch, ctx.steps_per_epoch)
        return model(
            batch["image"].to(ctx.device, non_blocking=True),
            batch["text_ids"].to(ctx.device, non_blocking=True),
            batch["text_atts"].to(ctx.device, non_blocking=True),
            alpha,
            update_momentum=ctx.first_micro_batch,  # one EMA step per optimizer step
            defer_enqueue=True,  # enqueued in after_step, only when the step was finite
        )

    def after_step(self, model: torch.nn.Module, finite: torch.Tensor) -> None:
        model.commit_queue(finite)

    def evaluate(self, model: torch.nn.Module, config: Mapping[str, Any], device: torch.device,
                 autocast_dtype: torch.dtype | None) -> dict[str, float]:
        """Zero-shot ITC recall on ``eval_file`` (all ranks share the work), with chance levels alongside."""
        if self._eval_set is None:
            return {}
        dataset = self._eval_set
        result = evaluate_retrieval(model, dataset, itc_only=True, batch_size=max(8, config["batch_size"]),
                                    device=device, autocast_dtype=autocast_dtype,
                                    max_length=max(EVAL_MAX_LENGTH, config["max_length"]))
        metrics = {f"eval_{k}": v for k, v in result.metrics.items()}
        metrics.update({f"chance_{k}": v for k, v in chance_recall(dataset.img2txt, len(dataset.texts)).items()})
        return metrics


def run_pretraining(config: Mapping[str, Any], *, resume: bool = False):
    """Pretrain with a validated config (``engine.config.load_config(path, overrides, PRETRAIN_SCHEMA)``).

    Returns the engine's ``RunResult``; ``pretrain.py`` is this plus the command line.
    """
    from engine.loop import Trainer

    return Trainer(PretrainTask(), config, resume=resume).run()
