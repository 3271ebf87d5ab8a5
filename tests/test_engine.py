"""The training engine where real runs break it: mixed precision ITC, accumulation, non-finite steps, names.

The process-level checks (signals to the whole process group, 2 ranks, resume on another world size)
are in tests/test_engine_processes.py.
"""

import importlib
import inspect
import json
import pkgutil
import re
from pathlib import Path

import pytest
import torch

import engine.logger
import models.losses
from models import build_model
from tasks.pretrain import PretrainTask, run_pretraining
from tests.conftest import TEST_CAPTIONS, tiny_model_config
from tests.pretrain_helpers import tiny_pretrain_config, write_tiny_dataset
from utils.errors import TrainingError

ROOT = Path(__file__).resolve().parents[1]


# -- 1. ITC similarities stay fp32 under autocast ------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_similarity_logits_are_fp32_inside_autocast(dtype):
    gen = torch.Generator().manual_seed(0)
    feats = torch.nn.functional.normalize(torch.randn(6, 32, generator=gen), dim=1)
    bank = torch.nn.functional.normalize(torch.randn(32, 50, generator=gen), dim=0)
    temp = torch.tensor(0.07, requires_grad=True)
    reference = feats @ bank / temp
    with torch.autocast("cpu", dtype=dtype):
        naive = feats @ bank / temp  # what the models did before: autocast casts the matmul
        fixed = models.losses.similarity_logits(feats, bank, temp)
    assert naive.dtype == dtype  # the hazard is real
    assert fixed.dtype == torch.float32
    assert torch.allclose(fixed, reference, atol=1e-6, rtol=0)
    fixed.sum().backward()
    assert temp.grad is not None and temp.grad.dtype == torch.float32


@pytest.mark.parametrize("kind", ["pretrain", "retrieval"])
def test_model_itc_logits_and_targets_are_fp32_under_bf16_autocast(kind, tokenizer, monkeypatch):
    torch.manual_seed(0)
    model = build_model(kind, tiny_model_config(), tokenizer=tokenizer)
    seen = []
    real_itc_loss = models.losses.itc_loss

    def spy(sim_i2t, sim_t2i, targets_i2t, targets_t2i):
        seen.append((sim_i2t.dtype, sim_t2i.dtype, targets_i2t.dtype, targets_t2i.dtype))
        return real_itc_loss(sim_i2t, sim_t2i, targets_i2t, targets_t2i)

    module = importlib.import_module(f"models.blip_{kind}")
    monkeypatch.setattr(module, "itc_loss", spy)
    images = torch.randn(4, 3, 32, 32)
    ids, atts = model.tokenize(TEST_CAPTIONS[:4])
    extra = (torch.tensor([0, 1, 2, 3]),) if kind == "retrieval" else ()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(images, ids, atts, 0.4, *extra)
    assert seen == [(torch.float32,) * 4]


# -- 4. non-finite steps: nothing enqueued, and the stop names its step ----------------------------

def _run_with_nan(tmp_path, monkeypatch, where, nan_steps, **overrides):
    """Run the tiny config with NaN injected at the given optimizer steps (1-based); record queue pointers."""
    task_forward = PretrainTask.forward
    calls = {"n": 0}
    pointers = []

    def forward(self, model, batch, ctx):
        calls["n"] += 1
        losses = task_forward(self, model, batch, ctx)
        if calls["n"] in nan_steps:
            if where == "loss":
                losses["loss_itm"] = losses["loss_itm"] * float("nan")
            else:  # a finite loss whose gradient is NaN
                head = model.module.itm_head if hasattr(model, "module") else model.itm_head
                losses["loss_itm"] = losses["loss_itm"] + 0.0 * head.weight.sum() * torch.tensor(float("nan"))
        return losses

    real_after = PretrainTask.after_step

    def after_step(self, model, finite):
        real_after(self, model, finite)
        pointers.append(int(model.queue_ptr))

    monkeypatch.setattr(PretrainTask, "forward", forward)
    monkeypatch.setattr(PretrainTask, "after_step", after_step)
    config = tiny_pretrain_config(tmp_path, max_epoch=1, queue_size=64, **overrides)
    return run_pretraining(config), pointers


@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_nonfinite_step_enqueues_nothing(tmp_path, monkeypatch, where):
    result, pointers = _run_with_nan(tmp_path, monkeypatch, where, {2})
    assert result.global_step == 4
    # batch 4 per step: the pointer advances by 4 except on the skipped step 2
    assert pointers == [4, 4, 8, 12]
    (epoch,) = [json.loads(l) for l in (Path(result.output_dir) / "log.txt").read_text().splitlines()
                if '"step"' not in l and '"event"' not in l]
    assert epoch["nonfinite_steps"] == 1


def test_nonfinite_limit_names_the_step_it_was_reached(tmp_path, monkeypatch):
    data = write_tiny_dataset(tmp_path / "data", n=64)  # 16 steps per epoch
    with pytest.raises(TrainingError) as err:
        _run_with_nan(tmp_path, monkeypatch, "loss", set(range(3, 100)), max_nonfinite_steps=4,
                      train_file=str(data))
    # steps 3, 4, 5, 6 are non-finite: the limit is reached at step 6 and the run stops at the check (step 10)
    assert "at global step 6" in str(err.value) and "stopped at step 10" in str(err.value)
    saved = torch.load(tmp_path / "out" / "checkpoint_last.pth", weights_only=True)
    assert saved["global_step"] == 10


# -- 6. gradient accumulation: one momentum EMA step per optimizer step ---------------------------

def test_momentum_moves_once_per_optimizer_step_with_accumulation(tmp_path, monkeypatch):
    snapshots = []  # (online, momentum) before each optimizer step's first micro-batch
    task_forward = PretrainTask.forward

    def forward(self, model, batch, ctx):
        if ctx.first_micro_batch:
            online = [p.detach().clone() for p in model.visual_encoder.parameters()]
            shadow = [p.detach().clone() for p in model.visual_encoder_m.parameters()]
            snapshots.append((online, shadow))
        return task_forward(self, model, batch, ctx)

    monkeypatch.setattr(PretrainTask, "forward", forward)
    config = tiny_pretrain_config(tmp_path, max_epoch=1, grad_accum_steps=2, batch_size=2, momentum=0.9)
    result = run_pretraining(config)
    assert result.global_step == 4 and len(snapshots) == 4  # 16 pairs / (2 x 2)
    final = [p.detach() for p in result.model.visual_encoder_m.parameters()]
    afters = [s for _, s in snapshots[1:]] + [final]
    for (online, before), after in zip(snapshots, afters):
        for o, b, a in zip(online, before, after):
            assert torch.allclose(a, 0.9 * b + 0.1 * o, atol=1e-6)


# -- 7. one name, one thing -----------------------------------------------------------------------

def _project_modules():
    for package in ("engine", "models", "data", "utils", "tasks"):
        pkg = importlib.import_module(package)
        yield pkg
        for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}."):
            if not info.name.endswith("__main__"):  # importing it would run a CLI
                yield importlib.import_module(info.name)


def test_each_error_class_and_checkpoint_function_is_defined_once():
    definitions: dict[str, list[str]] = {}
    for module in _project_modules():
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and obj.__module__ == module.__name__:
                definitions.setdefault(name, []).append(module.__name__)
    for name in ("ConfigError", "CheckpointError", "DatasetError", "TokenizerError", "TrainingError",
                 "load_checkpoint", "save_checkpoint", "unwrap_model", "unwrap"):
        assert len(definitions.get(name, [])) <= 1, (name, definitions.get(name))
    from models import CheckpointError as models_error
    from utils.errors import CheckpointError, MedVLPError

    assert models_error is CheckpointError and issubclass(CheckpointError, MedVLPError)


def _imports(path, packages):
    pattern = re.compile(rf"^\s*(from|import)\s+({'|'.join(packages)})\b", re.MULTILINE)
    return pattern.findall(path.read_text())


def test_engine_imports_nothing_of_models_or_data_and_utils_is_leaves():
    for path in (ROOT / "engine").glob("*.py"):
        assert not _imports(path, ["models", "data", "tasks"]), path
    for path in (ROOT / "utils").glob("*.py"):
        assert not _imports(path, ["models", "data", "engine", "tasks"]), path


# -- issue 14 #9: loss_curves.png, one panel per loss ----------------------------------------------

def test_loss_curves_have_a_panel_per_loss_lr_grad_norm_recall_and_resume_marks(tmp_path):
    log = tmp_path / "log.txt"
    lines = []
    for step in range(1, 21):
        lines.append({"step": step, "epoch": step // 11, "train_loss_ita": 5 - step * 0.01,
                      "train_loss_itm": 0.64, "train_lr": 1e-4, "train_grad_norm": 2.0})
    lines.insert(12, {"event": "resumed", "global_step": 12, "epoch": 1})
    lines.append({"epoch": 0, "global_step": 10, "train_loss_ita": 4.95, "eval_txt_r1": 12.0,
                  "chance_txt_r1": 1.0})
    log.write_text("\n".join(json.dumps(l) for l in lines) + "\n")
    panels = engine.logger.plot_loss_curves(log, tmp_path / "plot.png")
    assert panels == ["loss_ita (dotted grey: resumed)", "loss_itm", "lr", "grad_norm", "recall (epoch)"]
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    steps, epochs = engine.logger.read_log(log)
    assert len(steps) == 20 and len(epochs) == 1  # the event line is neither


# -- issue 14 #3: a tokenizer that does not fit the captions is reported at start -------------------

def test_a_tokenizer_that_spells_out_the_captions_is_reported(tmp_path, capsys):
    train = write_tiny_dataset(tmp_path / "data", n=8)
    records = json.loads(train.read_text())
    for record in records:
        record["caption"] = "hemangioblastoma with pneumocephalus and leptomeningeal enhancement"
    train.write_text(json.dumps(records))
    run_pretraining(tiny_pretrain_config(tmp_path, train_file=str(train), max_epoch=1))
    out = capsys.readouterr().out
    assert "hemangioblastoma" in out and "tokenizer" in out.lower()
