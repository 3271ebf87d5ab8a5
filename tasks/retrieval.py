"""BLIP's retrieval fine-tuning and evaluation as an engine task.

Training follows BLIP's ``train_retrieval.py``: ITC with idx-based positives (every
caption of the same image, in the batch and in the queue) and momentum
distillation, alpha ramped over epoch 0 only; ITM with hard negatives that never
share the image id; a cosine schedule; the validation split evaluated after every
epoch (``checkpoint_best.pth`` kept by ``val_r_mean``); the test split evaluated
with the best checkpoint at the end. ``evaluate_checkpoint`` is ``--evaluate``:
BLIP's metric dict for val and test from any checkpoint, no training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch

from data.loader import ResumableLoader
from data.retrieval_dataset import (
    BLIP_ANNOTATION_FILES,
    RetrievalCollator,
    RetrievalEvalDataset,
    build_retrieval_train_dataset,
    retrieval_files,
)
from data.transforms import build_image_transform
from engine.checkpoint import CHECKPOINT_BEST, read_torch_file
from engine.config import ENGINE_KEYS, Key, Schema, with_defaults
from engine.logger import read_log
from engine.distributed import (
    PeerFailureWatch,
    barrier,
    destroy_distributed,
    init_distributed,
    is_main_process,
    unwrap_model,
)
from engine.task import StepContext, TrainData
from models.blip_retrieval import BlipRetrieval
from models.retrieval_eval import chance_recall, describe, evaluate_retrieval
from tasks.common import build_task_model, image_keys, model_keys, tokenizer_fit_warning
from tasks.pretrain import small_eval_warning
from utils.atomic import atomic_open, atomic_write_text
from utils.errors import ConfigError, DatasetError

__all__ = ["RETRIEVAL_SCHEMA", "RetrievalTask", "alpha_at", "evaluate_checkpoint", "write_results", "plot_recall"]

RETRIEVAL_SCHEMA = Schema(
    name="retrieval",
    keys=(
        # data: BLIP's ann_root + dataset, or our own files
        Key("ann_root", "str", None, "BLIP: folder of coco_karpathy_*.json / flickr30k_*.json (with dataset).", nullable=True, path="input"),
        Key("dataset", "str", None, "BLIP: coco | flickr, naming the annotation files in ann_root.", nullable=True,
            choices=tuple(BLIP_ANNOTATION_FILES)),
        Key("train_file", "str", None, "Training pairs [{image, caption, image_id}] (image_id optional: else grouped by image path); overrides ann_root.", nullable=True, path="input"),
        Key("val_file", "str", None, "Validation split [{image, caption: [...]}] or flat pairs; evaluated after every epoch.", nullable=True, path="input"),
        Key("test_file", "str", None, "Test split, evaluated with the best checkpoint at the end (and by --evaluate).", nullable=True, path="input"),
        Key("image_root", "str", None, "Folder that relative image paths resolve against; null: each JSON file's own folder.", nullable=True, path="input"),
        Key("max_words", "int", 30, "Captions are cut to this many words after BLIP's pre_caption cleaning.", minimum=1),
        *image_keys(384, [0.5, 1.0]),
        # evaluation
        Key("k_test", "int", 256, "Candidates re-ranked by ITM per query (BLIP: 256 COCO, 128 Flickr); clamped to the set size.", minimum=1),
        Key("batch_size_test", "int", 64, "Images / texts per forward when computing evaluation features.", minimum=1),
        Key("itm_batch_size", "int", 128, "(image, text) pairs per forward in the ITM re-ranking.", minimum=1),
        Key("val_itc_only", "bool", False, "Validate after each epoch with ITC ranking only (fast); the final test is always re-ranked."),
        # model
        *model_keys(max_length=35),
        *with_defaults(ENGINE_KEYS, batch_size=32, init_lr=1e-5, min_lr=0.0, warmup_steps=0, lr_schedule="cosine",
                       max_epoch=6, output_dir="output/retrieval"),
    ),
    aliases={"batch_size_train": "batch_size"},
)


def alpha_at(config: Mapping[str, Any], epoch: int, step: int, steps_per_epoch: int) -> float:
    """BLIP's retrieval fine-tuning: alpha ramps linearly over epoch 0 only."""
    if epoch > 0:
        return float(config["alpha"])
    return float(config["alpha"]) * min(1.0, step / max(1, steps_per_epoch))


def _eval_dataset(config: Mapping[str, Any], path: str) -> RetrievalEvalDataset:
    return RetrievalEvalDataset(path, build_image_transform("test", config["image_size"]),
                                image_root=config.get("image_root"), max_words=config["max_words"],
                                max_pixels=config["max_image_pixels"])


def _evaluate_split(model: BlipRetrieval, config: Mapping[str, Any], dataset: RetrievalEvalDataset, prefix: str,
                    device: torch.device, autocast_dtype: torch.dtype | None, itc_only: bool,
                    progress: bool = False) -> dict[str, float]:
    result = evaluate_retrieval(
        model, dataset, k_test=config["k_test"], itc_only=itc_only, batch_size=config["batch_size_test"],
        itm_batch_size=config["itm_batch_size"], device=device, autocast_dtype=autocast_dtype,
        max_length=config["max_length"], progress=progress)
    metrics = {f"{prefix}_{k}": v for k, v in result.metrics.items()}
    if result.itc_metrics is not None:  # beside BLIP's keys: the ITC ranking before the ITM re-ranking
        metrics.update({f"{prefix}_itc_{k}": v for k, v in result.itc_metrics.items()})
    metrics.update({f"chance_{prefix}_{k}": v for k, v in chance_recall(dataset.img2txt, len(dataset.texts)).items()})
    return metrics


def _split_metrics(metrics: Mapping[str, float], prefix: str) -> tuple[dict[str, float], dict[str, float]]:
    """(model metrics, chance) of one split, without prefixes."""
    model = {k[len(prefix) + 1:]: v for k, v in metrics.items() if k.startswith(f"{prefix}_")}
    chance = {k[len(prefix) + 8:]: v for k, v in metrics.items() if k.startswith(f"chance_{prefix}_")}
    return model, chance


def plot_recall(results: Mapping[str, Mapping[str, float]], out_path: str | Path) -> None:
    """A small bar chart: R@1/5/10 per direction and split, chance as a black tick (atomic PNG)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    splits = [s for s in ("zero_shot", "val", "test") if s in results] + \
        [s for s in results if s not in ("zero_shot", "val", "test")]
    fig = Figure(figsize=(3.2 * max(1, len(splits)), 3.0), dpi=100)
    for i, split in enumerate(splits):
        ax = fig.add_subplot(1, len(splits), i + 1)
        metrics, chance = _split_metrics(results[split], split)
        labels = [f"{d}@{k}" for d in ("txt", "img") for k in (1, 5, 10)]
        values = [metrics.get(f"{d}_r{k}", 0.0) for d in ("txt", "img") for k in (1, 5, 10)]
        ax.bar(range(6), values, color=["C0"] * 3 + ["C1"] * 3)
        for x, (d, k) in enumerate((d, k) for d in ("txt", "img") for k in (1, 5, 10)):
            if f"{d}_r{k}" in chance:
                ax.hlines(chance[f"{d}_r{k}"], x - 0.4, x + 0.4, colors="black", linewidth=2)
        ax.set_xticks(range(6), labels, rotation=45, fontsize=7)
        ax.set_ylim(0, 100)
        ax.set_title(f"{split} (r_mean {metrics.get('r_mean', 0):.1f})", fontsize=9)
    fig.suptitle("recall@K (%); black: chance", fontsize=9)
    fig.tight_layout()
    with atomic_open(out_path, "wb") as handle:
        fig.savefig(handle, format="png")


def write_results(output_dir: str | Path, name: str, results: Mapping[str, Mapping[str, float]]) -> Path:
    """``output_dir/<name>.json`` (BLIP's metric dicts per split, plus chance) and ``<name>_recall.png``."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    atomic_write_text(path, json.dumps(results, indent=2, sort_keys=True) + "\n")
    plot_recall(results, folder / f"{name}_recall.png")
    return path


class RetrievalTask:
    """What the engine needs for retrieval fine-tuning (see ``engine/task.py``)."""

    name = "retrieval"
    schema = RETRIEVAL_SCHEMA
    best_metric = "val_r_mean"

    def __init__(self) -> None:
        self._val: RetrievalEvalDataset | None = None
        self._test: RetrievalEvalDataset | None = None

    def build_model(self, config: Mapping[str, Any], device: torch.device) -> BlipRetrieval:
        model = build_task_model("retrieval", config, device)
        self._tokenizer = model.tokenizer
        return model

    def build_train_data(self, config: Mapping[str, Any], device: torch.device) -> TrainData:
        files = retrieval_files(config)
        if not files["train"]:
            raise ConfigError("retrieval training needs train_file, or ann_root + dataset (BLIP's annotation files)")
        # The evaluation splits are read (and every image checked) now: a broken split fails before training.
        self._val = _eval_dataset(config, files["val"]) if files["val"] else None
        self._test = _eval_dataset(config, files["test"]) if files["test"] else None
        dataset = build_retrieval_train_dataset(config, files["train"])
        return ResumableLoader(
            dataset, batch_size=config["batch_size"], num_workers=config["num_workers"], seed=config["seed"],
            pin_memory=device.type == "cuda",
            collate_fn=RetrievalCollator(self._tokenizer, config["max_length"], dataset.image_index),
        )

    def setup_messages(self, config: Mapping[str, Any], data: TrainData) -> list[str]:
        fit = tokenizer_fit_warning(self._tokenizer, data, config["max_length"])
        messages = [fit] if fit else []
        for split, dataset in (("val", self._val), ("test", self._test)):
            if dataset is not None:
                chance = chance_recall(dataset.img2txt, len(dataset.texts))
                warning = small_eval_warning(chance, f"the {split} split {dataset.path} ({len(dataset)} images)")
                if warning:
                    messages.append(warning)
        if self._val is None:
            messages.append("note: no val_file: no checkpoint_best.pth; the test split is evaluated with the last "
                            "weights")
        return messages

    def forward(self, model: torch.nn.Module, batch: Mapping[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        return model(
            batch["image"].to(ctx.device, non_blocking=True),
            batch["text_ids"].to(ctx.device, non_blocking=True),
            batch["text_atts"].to(ctx.device, non_blocking=True),
            alpha_at(ctx.config, ctx.epoch, ctx.step_in_epoch, ctx.steps_per_epoch),
            batch["idx"].to(ctx.device, non_blocking=True),
            update_momentum=ctx.first_micro_batch,
            defer_enqueue=True,
        )

    def after_step(self, model: torch.nn.Module, finite: torch.Tensor) -> None:
        model.commit_queue(finite)

    def evaluate(self, model: torch.nn.Module, config: Mapping[str, Any], device: torch.device,
                 autocast_dtype: torch.dtype | None) -> dict[str, float]:
        if self._val is None:
            return {}
        return _evaluate_split(model, config, self._val, "val", device, autocast_dtype, config["val_itc_only"])

    def finish(self, trainer: Any) -> dict[str, float]:
        """The test split with the best checkpoint (else the last weights); results.json + plot."""
        model = unwrap_model(trainer.ddp)
        best = trainer.output_dir / CHECKPOINT_BEST
        barrier()
        if trainer.task.best_metric and best.exists():
            model.load_state_dict(read_torch_file(best)["model"])
        results: dict[str, dict[str, float]] = {}
        _, epochs = read_log(trainer.output_dir / "log.txt")
        best_line = max((line for line in epochs if "val_r_mean" in line), key=lambda l: l["val_r_mean"],
                        default=None)
        if best_line is not None:
            results["val"] = {k: v for k, v in best_line.items() if "val_" in k}
        metrics: dict[str, float] = {}
        if self._test is not None:
            metrics = _evaluate_split(model, trainer.cfg, self._test, "test", trainer.device, trainer.amp_dtype,
                                      itc_only=False)
            results["test"] = metrics
            if best_line is not None:
                metrics = {**metrics, "best_epoch": best_line["epoch"]}
            trainer.logger.event("test", **metrics)
            if is_main_process():
                test_only, chance = _split_metrics(metrics, "test")
                for line in describe(test_only, chance, f"test split {self._test.path} "
                                     f"({'best checkpoint' if best.exists() else 'last weights'}):"):
                    trainer.logger.write(line)
        if is_main_process() and results:
            write_results(trainer.output_dir, "results", results)
        barrier()
        return metrics


def evaluate_checkpoint(config: Mapping[str, Any], *, itc_only: bool = False) -> dict[str, dict[str, float]]:
    """``train_retrieval.py --evaluate``: BLIP's metric dict for the val and test splits of ``config``.

    The model is built from the config (shapes inline or a med_config path) and ``pretrained``
    (a BLIP .pth, ours, a pretrain checkpoint for zero-shot, or transformers weights). Runs in one
    process or under torchrun (features and ITM pairs split over ranks). Rank 0 writes
    ``output_dir/evaluate.json`` and ``evaluate_recall.png`` and returns the results everywhere.
    """
    if not config.get("pretrained"):
        raise ConfigError("--evaluate needs pretrained=CHECKPOINT (the weights to evaluate)")
    files = retrieval_files(config)
    splits = [(s, files[s]) for s in ("val", "test") if files[s]]
    if not splits:
        raise ConfigError("--evaluate needs val_file and/or test_file (or ann_root + dataset)")
    info = init_distributed(None if config["device"] == "auto" else config["device"])
    try:
        with PeerFailureWatch():
            datasets = {split: _eval_dataset(config, path) for split, path in splits}  # all checked first
            model = build_task_model("retrieval", config, info.device)
            dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[config["precision"]]
            results = {}
            for split, dataset in datasets.items():
                chance = chance_recall(dataset.img2txt, len(dataset.texts))
                warning = small_eval_warning(chance, f"the {split} split {dataset.path} ({len(dataset)} images)")
                if warning and is_main_process():
                    print(warning, flush=True)
                results[split] = _evaluate_split(model, config, dataset, split, info.device, dtype, itc_only,
                                                 progress=True)
            if is_main_process():
                write_results(config["output_dir"], "evaluate", results)
            barrier()
            return results
    except DatasetError:
        raise
    finally:
        destroy_distributed()


def run_retrieval(config: Mapping[str, Any], *, resume: bool = False):
    """Fine-tune with a validated config (``load_config(path, overrides, RETRIEVAL_SCHEMA)``)."""
    from engine.loop import Trainer

    return Trainer(RetrievalTask(), config, resume=resume).run()
