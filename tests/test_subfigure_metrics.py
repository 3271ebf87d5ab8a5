"""The benchmark's scores, checked against hand-computed values."""

import pytest

from data.subfigure.metrics import caption_split_scores, match_panels, panel_split_score, token_f1

GT = [(0, 0, 100, 100), (110, 0, 210, 100)]


def test_perfect_split():
    assert panel_split_score(GT, GT) == 1.0


def test_whole_figure_for_two_panels_scores_zero():
    # The whole image overlaps each panel by < 66 % of its own area.
    assert panel_split_score([(0, 0, 210, 100)], GT) == 0.0


def test_small_crop_inside_a_panel_counts():
    # Intersection / predicted area = 1 for a crop inside the panel.
    assert match_panels([(10, 10, 50, 50)], GT) == [0]


def test_over_split_is_penalised_by_the_denominator():
    pred = [(0, 0, 50, 100), (50, 0, 100, 100), (110, 0, 210, 100)]
    # Two halves of panel 0: only the first matches it; panel 1 matches. 2 correct / max(2, 3).
    assert panel_split_score(pred, GT) == pytest.approx(2 / 3)


def test_threshold_is_strict_above_066():
    # 66 of 100 columns inside panel 0: ratio 0.66 is not > 0.66.
    assert match_panels([(34, 0, 134, 100)], GT) == [None]
    assert match_panels([(33, 0, 133, 100)], GT) == [0]


def test_token_f1_by_hand():
    # pred tokens: a b c; gold: a b d e -> common 2, P = 2/3, R = 2/4, F1 = 4/7.
    assert token_f1("A, b c.", "a b d e") == pytest.approx(4 / 7)
    assert token_f1("", "") == 1.0
    assert token_f1("x", "") == 0.0


def test_caption_scores():
    assert caption_split_scores([], []) == (True, 1.0)
    assert caption_split_scores([("A", "x")], []) == (False, 0.0)
    exact, f1 = caption_split_scores([("a", "one two"), ("b", "three")], [("A", "one two"), ("B", "four")])
    assert exact and f1 == pytest.approx(0.5)
    exact, f1 = caption_split_scores([("A", "x")], [("A", "x"), ("B", "y")])
    assert not exact and f1 == pytest.approx(0.5)
