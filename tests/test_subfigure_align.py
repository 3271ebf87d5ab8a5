"""Pairing panels and subcaptions: OCR first, reading order for the rest, whole when unsure."""

from data.subfigure.align import CONFUSION_FACTOR, align, labels_equivalent
from data.subfigure.ocr import LabelCandidate

SUBS = [("A", "lead. first"), ("B", "lead. second"), ("C", "lead. third")]


def _c(label, conf=0.95):
    return LabelCandidate(label, conf, "tl", 0.1)


def test_ocr_pairs_follow_the_labels_not_the_order():
    # Panels in reading order read C, A, B (an unusual layout): OCR wins.
    pairs = align([[_c("C")], [_c("a")], [_c("B")]], SUBS)
    assert [(p.label, p.panel, p.method) for p in pairs] == [("A", 1, "ocr"), ("B", 2, "ocr"), ("C", 0, "ocr")]
    assert pairs[0].subcaption == "lead. first"


def test_reading_order_fills_in_when_ocr_failed_and_counts_match():
    pairs = align([[], [], []], SUBS)
    assert [(p.label, p.panel, p.method) for p in pairs] == [("A", 0, "order"), ("B", 1, "order"), ("C", 2, "order")]


def test_mixed_ocr_and_order():
    pairs = align([[_c("A")], [], [_c("C")]], SUBS)
    assert [(p.panel, p.method) for p in pairs] == [(0, "ocr"), (1, "order"), (2, "ocr")]


def test_order_fill_refused_when_it_contradicts_ocr():
    # OCR says panel 0 is C; the free labels A, B would have to go to panels 1, 2 after C.
    assert align([[_c("C")], [], []], SUBS) is None


def test_count_mismatch_without_ocr_is_unmatched():
    assert align([[], []], SUBS) is None
    assert align([[], [], [], []], SUBS) is None


def test_single_panel_or_single_label_is_not_split():
    assert align([[_c("A")]], SUBS) is None
    assert align([[_c("A")], [_c("B")]], [("A", "x")]) is None


def test_extra_panels_are_left_out_when_ocr_names_every_label():
    pairs = align([[_c("A")], [], [_c("B")], [_c("C")]], SUBS)
    assert [p.panel for p in pairs] == [0, 2, 3]


def test_confusable_readings():
    assert labels_equivalent("a", "A") == 1.0
    assert labels_equivalent("1", "I") == CONFUSION_FACTOR
    assert labels_equivalent("8", "B") == CONFUSION_FACTOR
    assert labels_equivalent("D", "B") == 0.0
    assert labels_equivalent("ii", "11") == CONFUSION_FACTOR
    pairs = align([[_c("A")], [_c("8")], [_c("C")]], SUBS)
    assert [p.method for p in pairs] == ["ocr", "ocr", "ocr"]


def test_non_top_reading_can_match():
    # Panel 1's best reading is texture ("2"); its second reading is the label.
    pairs = align([[_c("A")], [_c("2"), _c("B", 0.6)], [_c("C")]], SUBS)
    assert [(p.panel, p.method) for p in pairs] == [(0, "ocr"), (1, "ocr"), (2, "ocr")]


def test_sub_labelled_panels_get_their_panel_text():
    """Issue 11: b1, b2 are panels of their own that carry panel b's subcaption."""
    subs = [("a", "first"), ("b", "second"), ("c", "third")]
    pairs = align([[_c("a")], [_c("b1")], [_c("b2")], [_c("c")]], subs, {"b": ("b1", "b2")})
    assert [(p.label, p.panel, p.subcaption) for p in pairs] == [
        ("a", 0, "first"), ("b1", 1, "second"), ("b2", 2, "second"), ("c", 3, "third")]
    # Sub-labels the caption does not list but the figure prints are taken from the readings.
    pairs = align([[_c("a")], [_c("b1")], [_c("b2")], [_c("c")]], subs)
    assert [p.label for p in pairs] == ["a", "b1", "b2", "c"]
    # ... and reading order fills a sub-panel the OCR missed.
    pairs = align([[_c("a")], [], [_c("b2")], [_c("c")]], subs, {"b": ("b1", "b2")})
    assert [(p.label, p.method) for p in pairs] == [("a", "ocr"), ("b1", "order"), ("b2", "ocr"), ("c", "ocr")]
