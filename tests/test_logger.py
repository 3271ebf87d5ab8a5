"""Training logger: device-side accumulation without per-step syncs, log.txt lines, TensorBoard, plot."""

import json

import pytest
import torch

from engine.logger import LOG_NAME, PLOT_NAME, MetricAccumulator, TrainLogger, plot_loss_curves, read_log


class _SyncCounter:
    """Counts tensor -> host reads (item, tolist, float(), int())."""

    NAMES = ("item", "tolist", "__float__", "__int__")

    def __init__(self, monkeypatch):
        self.calls = 0
        for name in self.NAMES:
            original = getattr(torch.Tensor, name)

            def wrapper(tensor, *args, _original=original, **kwargs):
                self.calls += 1
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, wrapper)


def _losses(step):
    return {"loss_itc": torch.tensor(float(step)), "loss_itm": torch.tensor(2.0 * step)}


def test_host_reads_only_at_log_intervals(tmp_path, monkeypatch):
    logger = TrainLogger(tmp_path, log_every=5, tensorboard=False, enabled=True)
    logger.start_epoch(0, steps_in_epoch=10)
    counter = _SyncCounter(monkeypatch)
    reads = []
    for step in range(1, 11):
        logger.log_step(_losses(step), lr=0.1, samples=4)
        reads.append(counter.calls)
    # no read on steps 1-4 and 6-9; exactly one batched read at steps 5 and 10
    assert reads == [0, 0, 0, 0, 1, 1, 1, 1, 1, 2]
    logger.end_epoch()
    assert counter.calls == 3
    logger.close()


def test_log_lines_hold_interval_and_epoch_means(tmp_path):
    logger = TrainLogger(tmp_path, log_every=2, tensorboard=False, enabled=True)
    logger.start_epoch(3, steps_in_epoch=4)
    lrs = [0.1, 0.2, 0.3, 0.4]
    for step in range(1, 5):
        logger.log_step(_losses(step), lr=lrs[step - 1], samples=8)
    stats = logger.end_epoch({"skipped_images": 2})
    logger.close()
    lines = [json.loads(line) for line in (tmp_path / LOG_NAME).read_text().splitlines()]
    assert len(lines) == 3
    first, second, epoch = lines
    assert first["step"] == 2 and first["epoch"] == 3
    assert first["train_loss_itc"] == pytest.approx(1.5) and first["train_loss_itm"] == pytest.approx(3.0)
    assert first["train_lr"] == pytest.approx(0.2) and first["samples_per_sec"] > 0
    assert second["step"] == 4 and second["train_loss_itc"] == pytest.approx(3.5)
    # BLIP's epoch line: train_* means over the epoch + epoch
    assert epoch["epoch"] == 3 and "step" not in epoch
    assert epoch["train_loss_itc"] == pytest.approx(2.5) and epoch["train_loss_itm"] == pytest.approx(5.0)
    assert epoch["train_lr"] == pytest.approx(0.25) and epoch["global_step"] == 4
    assert epoch["skipped_images"] == 2 and stats == epoch


def test_plot_and_tensorboard_are_written(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TrainLogger(tmp_path, log_every=1, tensorboard=True, enabled=True)
    for epoch in range(2):
        logger.start_epoch(epoch, steps_in_epoch=3)
        for step in range(3):
            logger.log_step({"loss_lm": torch.tensor(3.0 - epoch - 0.1 * step)}, lr=1e-3, samples=2)
        logger.end_epoch()
    logger.close()
    png = (tmp_path / PLOT_NAME).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert not list(tmp_path.glob(".*tmp"))
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    values = [e.value for e in events.Scalars("train/loss_lm")]
    assert values == pytest.approx([3.0, 2.9, 2.8, 2.0, 1.9, 1.8])
    assert [e.step for e in events.Scalars("epoch/train_loss_lm")] == [0, 1]


def test_non_main_rank_writes_nothing(tmp_path):
    logger = TrainLogger(tmp_path / "out", log_every=1, enabled=False)
    logger.start_epoch(0, 2)
    logger.log_step(_losses(1), lr=0.1, samples=1)
    stats = logger.end_epoch()
    logger.close()
    assert stats["train_loss_itc"] == 1.0  # it still takes part in the epoch reduction
    assert not (tmp_path / "out").exists()


def test_read_log_after_resume_keeps_later_lines_and_skips_partial(tmp_path):
    path = tmp_path / LOG_NAME
    path.write_text(
        '{"step": 1, "epoch": 0, "train_loss": 5.0}\n{"step": 2, "epoch": 0, "train_loss": 4.0}\n'
        '{"step": 3, "epoch": 0, "train_lo'  # killed mid-write
        '\n{"step": 2, "epoch": 0, "train_loss": 4.5}\n{"train_loss": 4.7, "epoch": 0, "global_step": 2}\n'
    )
    steps, epochs = read_log(path)
    assert [(s["step"], s["train_loss"]) for s in steps] == [(1, 5.0), (2, 4.5)]
    assert epochs == [{"train_loss": 4.7, "epoch": 0, "global_step": 2}]
    assert plot_loss_curves(path, tmp_path / "p.png")  # the panel titles
    assert plot_loss_curves(tmp_path / "missing.txt", tmp_path / "q.png") == []


def test_accumulator_means_without_process_group():
    acc = MetricAccumulator()
    for v in (1.0, 2.0, 6.0):
        acc.update({"a": torch.tensor(v), "b": v * 10})
    acc.update({"a": torch.tensor([4.0])})  # shape (1,) accepted
    assert acc.means() == {"a": pytest.approx(13 / 4), "b": pytest.approx(30.0)}
    assert acc.means_across_ranks() == acc.means()
    acc.reset()
    assert not acc and acc.means() == {}
