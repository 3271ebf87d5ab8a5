"""Choosing panel labels with the caption, position and sequence; label positions as cut seeds (issue 11)."""

import os

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from data.subfigure.figure import split_figure
from data.subfigure.labels import (
    MIN_LABEL_EVIDENCE, caption_accepts, caption_units, choose_labels, infer_missing_labels,
)
from data.subfigure.ocr import LabelCandidate
from data.subfigure.realistic import make_realistic_figure

BOXES3 = [(0, 0, 100, 100), (110, 0, 210, 100), (220, 0, 320, 100)]


def _c(label, conf=0.95, dist=0.1):
    return LabelCandidate(label, conf, "tl", dist)


def test_caption_units_list_sub_labels_after_their_panel():
    assert caption_units([("a", ()), ("b", ("b1", "b2")), ("c", ())]) == ["a", "b", "b1", "b2", "c"]


def test_only_labels_the_caption_names_are_chosen():
    # Chart ticks and letters in a micrograph ("U", "4", "15", "W") are not caption labels.
    readings = [[_c("U"), _c("A", 0.9, 0.2)], [_c("4")], [_c("15"), _c("W")]]
    chosen = choose_labels(readings, BOXES3, ["A", "B", "C"])
    assert [c.label if c else None for c in chosen] == ["A", None, None]


def test_without_a_caption_any_increasing_label_sequence():
    chosen = choose_labels([[_c("a")], [_c("b")], [_c("c")]], BOXES3)
    assert [c.label for c in chosen] == ["a", "b", "c"]


def test_labels_must_increase_along_the_panels():
    # A "B" read in the third panel after "C" in the second: the sequence keeps the stronger pair.
    readings = [[_c("A")], [_c("C", 0.5)], [_c("B")]]
    chosen = choose_labels(readings, BOXES3, ["A", "B", "C"])
    assert [c.label if c else None for c in chosen] == ["A", None, "B"]


def test_column_major_layouts_are_read_by_columns():
    grid = [(0, 0, 100, 100), (110, 0, 210, 100), (0, 110, 100, 210), (110, 110, 210, 210)]
    # Panels in row-major order read A, C, B, D: the figure is labelled down the columns.
    chosen = choose_labels([[_c("A")], [_c("C")], [_c("B")], [_c("D")]], grid, ["A", "B", "C", "D"])
    assert [c.label for c in chosen] == ["A", "C", "B", "D"]


def test_position_and_confidence_make_the_evidence():
    far = _c("B", conf=0.9, dist=0.9)  # deep inside the panel: 0.9 x 0.1 < MIN_LABEL_EVIDENCE
    near = _c("A", conf=0.9, dist=0.1)
    chosen = choose_labels([[near], [far]], BOXES3[:2], ["A", "B"])
    assert chosen[1] is None
    assert chosen[0].confidence == pytest.approx(0.9 * 0.9)
    assert 0.9 * 0.1 < MIN_LABEL_EVIDENCE


def test_recogniser_confusions_are_spelled_as_the_caption_does():
    chosen = choose_labels([[_c("8")], [_c("C")]], BOXES3[:2], ["B", "C"])
    assert chosen[0].label == "B" and chosen[0].confidence < chosen[1].confidence


def test_sub_labels_b1_b4_are_kept():
    readings = [[_c("a")], [_c("b1")], [_c("b2")]]
    chosen = choose_labels(readings, BOXES3, ["a", "b", "c"])
    assert [c.label for c in chosen] == ["a", "b1", "b2"]
    assert caption_accepts(["a", "b"])("b3") and not caption_accepts(["a", "b"])("d")


def test_a_lone_unlisted_sub_label_is_the_letter_beside_a_tick_value():
    # "A" printed next to a tick value "40" reads "A4": the caption names no sub-labels and no other panel
    # carries an A-something, so the label is A. A series (b1, b2) or a listed sub-label stays as read.
    boxes4 = BOXES3 + [(330, 0, 430, 100)]
    chosen = choose_labels([[_c("A4")], [_c("B")], [_c("C")], [_c("D1")]], boxes4, ["A", "B", "C", "D"])
    assert [c.label for c in chosen] == ["A", "B", "C", "D"]
    chosen = choose_labels([[_c("a")], [_c("b1")], [_c("b2")]], BOXES3, ["a", "b", "c"])
    assert [c.label for c in chosen] == ["a", "b1", "b2"]
    chosen = choose_labels([[_c("a")], [_c("b1")], [_c("c")]], BOXES3, ["a", "b", "b1", "c"])
    assert [c.label for c in chosen] == ["a", "b1", "c"]


def test_the_letter_read_alone_beats_the_letter_joined_to_a_digit():
    # Both readings at the same corner, "C2" a little more confident: the caption names "C", not "C2"
    # (0.97 x 0.9 closeness x 0.8 for an unlisted sub-label < 0.95 x 0.9).
    chosen = choose_labels([[_c("B")], [_c("C2", conf=0.97), _c("C")]], BOXES3[:2], ["B", "C"])
    assert chosen[1].label == "C" and chosen[1].confidence == pytest.approx(0.95 * 0.9)


# ---------------------------------------------------------------- with the OCR engine


def _font(size):
    import matplotlib

    return ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans-Bold.ttf"), size)


def _chart_pair():
    """Two charts side by side with tick labels and group letters on the axis; panel labels A, B."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = []
    for _ in range(2):
        fig = Figure(figsize=(3.2, 2.6), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(111)
        ax.bar([0, 1, 2], [3, 5, 2])
        ax.set_xticks([0, 1, 2])
        ax.set_xticklabels(["C", "D", "E"])  # letters inside the chart, not panel labels
        fig.tight_layout(pad=1.6)
        fig.canvas.draw()
        panels.append(np.asarray(fig.canvas.buffer_rgba())[..., :3])
    h, w = panels[0].shape[:2]
    canvas = Image.new("RGB", (2 * w + 20, h), "white")
    for i, arr in enumerate(panels):
        canvas.paste(Image.fromarray(arr), (i * (w + 20), 0))
    draw = ImageDraw.Draw(canvas)
    for i, label in enumerate("AB"):
        draw.text((i * (w + 20) + 4, 2), label, fill="black", font=_font(22))
    return canvas


def test_chart_text_is_not_a_label():
    panels = split_figure(_chart_pair(), labels=["A", "B"])
    assert [p.label for p in panels] == ["A", "B"]


def test_labels_seed_cuts_between_panels_that_show_no_boundary():
    # Two panels of the same flat texture, touching: nothing but the printed labels shows the cut.
    rng = np.random.default_rng(0)
    base = np.clip(rng.normal(120, 6, (260, 600, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(base)
    draw = ImageDraw.Draw(img)
    draw.text((8, 6), "A", fill="white", font=_font(28))
    draw.text((308, 6), "B", fill="white", font=_font(28))
    panels = split_figure(img, labels=["A", "B"])
    assert [p.label for p in panels] == ["A", "B"]
    assert abs(panels[1].box[0] - 300) <= 12, panels
    # Without labels (a caption naming nothing) the figure stays whole.
    assert len(split_figure(img)) == 1


def test_realistic_generator_is_deterministic_and_consistent():
    a, b = make_realistic_figure(3), make_realistic_figure(3)
    assert a.caption == b.caption and a.boxes == b.boxes
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    w, h = a.image.size
    assert all(0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h for x0, y0, x1, y1 in a.boxes)
    assert len(a.labels) == len(a.boxes) == len(a.caption_labels)
    assert {label.lower() for label in a.caption_labels} == {label.lower() for label in a.expected_caption_labels}


class _CloserReader:
    """A stand-in for the OCR engine's second look: records what it was asked, answers from a table."""

    def __init__(self, answers):
        self.answers, self.asked = answers, []

    def read_closer(self, rgb, boxes, corner, accept):
        self.asked.append((list(boxes), corner))
        return [[c for c in self.answers.get(box, []) if accept is None or accept(c.label)] for box in boxes]


def test_a_second_closer_look_reads_labels_the_first_missed():
    from data.subfigure.figure import _second_look

    units = ["A", "B", "C"]
    readings = [[_c("A")], [], [_c("C")]]
    chosen = choose_labels(readings, BOXES3, units)
    assert [c and c.label for c in chosen] == ["A", None, "C"]
    reader = _CloserReader({BOXES3[1]: [_c("B", conf=0.9, dist=0.2), _c("x")]})
    again = _second_look(None, BOXES3, readings, chosen, units, reader, caption_accepts(units))
    assert [c.label for c in again] == ["A", "B", "C"]
    assert reader.asked == [([BOXES3[1]], "tl")]  # only the unlabelled panel, at the others' corner
    assert again[1].confidence == pytest.approx(0.9 * 0.8)
    # Nothing missing: no second look.
    idle = _CloserReader({})
    full = choose_labels([[_c("A")], [_c("B")], [_c("C")]], BOXES3, units)
    assert _second_look(None, BOXES3, readings, full, units, idle, caption_accepts(units)) == full
    assert idle.asked == []


def test_labels_missed_at_first_are_read_end_to_end():
    # Realistic dev figures 72 and 104: the first look at the corners missed one label of each (F; B).
    for seed in (72, 104):
        fig = make_realistic_figure(seed)
        panels = split_figure(fig.image, labels=list(fig.caption_labels))
        assert [p.label for p in panels] == fig.labels, seed


GRID = [(0, 0, 100, 100), (110, 0, 210, 100), (0, 110, 100, 210), (110, 110, 210, 210)]  # 2 x 2, reading order


def _read(*labels):
    return [_c(x) if x else None for x in labels]


@pytest.mark.parametrize("read, units, boxes, expected", [
    (("A", None, "C"), "ABC", BOXES3, [None, "B", None]),  # between two read labels
    ((None, "B", "C"), "ABC", BOXES3, ["A", None, None]),  # before the first
    (("a", "b", "c", None), "abcd", GRID, [None, None, None, "d"]),  # after the last
    (("A", "B", None, None), "ABCD", GRID, [None, None, "C", "D"]),  # a whole stretch
    ((None, "b", None, None), "abcd", GRID, [None, None, None, None]),  # one stray reading would label them all
    (("A", None, "B"), "AB", BOXES3, [None, None, None]),  # a legend or colour bar between: counts differ
    (("A", None, "C"), "ABCD", BOXES3, [None, "B", None]),  # the inner gap fits; "D" has no panel left
    ((None, None, None), "ABC", BOXES3, [None, None, None]),  # nothing read, nothing to anchor
    (("A", None, "X"), "ABC", BOXES3, [None, None, None]),  # a read label the caption does not list
    ((None, "B", "X", None), "ABCD", GRID, ["A", None, None, None]),  # ... fills nothing in its own stretch
    (("A", None, "B", "D"), "ABCD", GRID, [None, "C", None, None]),  # read by columns: A B / C D is A C / B D
])
def test_unread_labels_follow_from_the_sequence_of_read_ones(read, units, boxes, expected):
    assert infer_missing_labels(_read(*read), boxes, list(units)) == expected


def test_sub_labels_are_inferred_per_panel_not_their_letter():
    units = caption_units([("a", ()), ("b", ("b1", "b2")), ("c", ())])
    inferred = infer_missing_labels(_read("a", "b1", None, "c"), GRID, units)
    assert inferred == [None, None, "b2", None]


def test_split_figure_marks_inferred_labels(monkeypatch):
    # Three panels on white; the reader reads "A" and "C" only: "B" follows, at half the weakest confidence.
    image = Image.new("RGB", (340, 110), "white")
    draw = ImageDraw.Draw(image)
    for x0, y0, x1, y1 in BOXES3:
        draw.rectangle((x0 + 5, y0 + 5, x1 - 5, y1 - 5), fill=(40, 90, 160))

    class Reader:
        def read(self, rgb, boxes, accept=None, corners=None):
            return [[_c("A", 0.9, 0.0)], [], [_c("C", 0.8, 0.0)]][: len(boxes)]

        def read_closer(self, rgb, boxes, corner, accept):
            return [[] for _ in boxes]

    monkeypatch.setattr("data.subfigure.figure.get_reader", lambda: Reader())
    panels = split_figure(image, labels=["A", "B", "C"])
    assert [(p.label, p.inferred) for p in panels] == [("A", False), ("B", True), ("C", False)]
    assert panels[1].confidence == pytest.approx(0.4) and panels[1].candidates == ()
