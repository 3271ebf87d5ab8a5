"""The synthetic benchmark figures: deterministic, well-formed, and a small-N sanity check of the splitter."""

import numpy as np

from data.subfigure.metrics import panel_split_score
from data.subfigure.panels import detect_panels
from data.subfigure.synthetic import make_figure


def _overlap(a, b):
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def test_same_seed_same_figure():
    a, b = make_figure(7), make_figure(7)
    assert a.boxes == b.boxes and a.labels == b.labels and a.caption == b.caption
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))


def test_ground_truth_is_well_formed():
    for seed in range(6):
        fig = make_figure(seed)
        w, h = fig.image.size
        assert len(fig.boxes) == len(fig.labels) == len(fig.label_boxes) == len(fig.kinds) >= 2
        for i, box in enumerate(fig.boxes):
            assert 0 <= box[0] < box[2] <= w and 0 <= box[1] < box[3] <= h
            assert all(_overlap(box, other) == 0 for other in fig.boxes[i + 1 :])
        drawn = [label for label in fig.labels if label]
        assert len(set(drawn)) == len(drawn)


def test_splitter_sanity_on_a_few_synthetic_figures():
    # A regression guard, not the benchmark (bench/eval_subfigure.py scores 300 figures).
    scores = [panel_split_score(detect_panels(f.image), f.boxes) for f in map(make_figure, range(100, 112))]
    assert np.mean(scores) >= 0.7
