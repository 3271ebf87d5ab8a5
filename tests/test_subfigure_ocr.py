"""Panel-label OCR: parsing readings, finding glyphs, and reading drawn labels with RapidOCR."""

import os

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from data.subfigure.ocr import LabelCandidate, find_glyph_groups, label_rank, parse_label, sequence_score


def _font(size, name="DejaVuSans-Bold.ttf"):
    import matplotlib

    return ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", name), size)


@pytest.mark.parametrize(
    "text, label",
    [("A", "A"), ("(a)", "a"), ("B.", "B"), ("c)", "c"), ("D:", "D"), ("iv", "iv"), ("(III)", "III"),
     ("12", "12"), ("A1", "A1"), ("\uff08\uff41\uff09", "a"), ("\uff21", "A"), (" b ", "b")],
)
def test_parse_label_accepts_labels(text, label):
    assert parse_label(text) == label


@pytest.mark.parametrize("text", ["", "0.5", "100", "mm", "Control", "P<0.05", "(n=3)", "-", "AB", "1.0"])
def test_parse_label_rejects_non_labels(text):
    assert parse_label(text) is None


def test_label_rank():
    assert label_rank("A") == ("upper", 0)
    assert label_rank("c") == ("lower", 2)
    assert label_rank("3") == ("digit", 2)
    assert label_rank("iv") == ("roman", 3)
    assert label_rank("B2") == ("upper", 1)


def _cand(label, conf=0.9, dist=0.1):
    return LabelCandidate(label, conf, "tl", dist)


def test_sequence_score_prefers_an_ordered_sequence_to_texture():
    sequence = [[_cand("A")], [_cand("B")], [_cand("C")]]
    texture = [[_cand("1", dist=0.6)], [_cand("l", dist=0.7)], [_cand("1", dist=0.5)]]
    good, ordered = sequence_score(sequence)
    bad, _ = sequence_score(texture)
    assert ordered == 1.0
    # 3 x 0.9 x 0.9 closeness, with full order and placement bonus.
    assert good == pytest.approx(3 * 0.9 * 0.9)
    assert bad < good / 3
    assert sequence_score([[], []]) == (0.0, 0.0)


def test_glyph_groups_find_a_label_near_the_corner():
    img = Image.new("RGB", (120, 120), (30, 30, 30))
    draw = ImageDraw.Draw(img)
    draw.text((6, 4), "(b)", fill=(255, 255, 255), font=_font(26))
    draw.ellipse([60, 60, 110, 110], fill=(200, 200, 200))  # a bright blob is not a glyph
    groups = find_glyph_groups(np.asarray(img), "tl")
    assert groups, "no glyph group found"
    dist, (x0, y0, x1, y1) = groups[0]
    assert x0 <= 10 and y0 <= 12 and x1 >= 40  # the whole "(b)" as one group
    assert all(not (b[0] >= 55 and b[1] >= 55) for _, b in groups)


def _two_panel_figure(labels, corner="tl", colour=(255, 255, 255), size=34):
    rng = np.random.default_rng(1)
    img = np.full((300, 620, 3), 255, np.uint8)
    boxes = [(10, 10, 300, 290), (320, 10, 610, 290)]
    for x0, y0, x1, y1 in boxes:
        img[y0:y1, x0:x1] = rng.integers(20, 90, (y1 - y0, x1 - x0, 3), dtype=np.uint8)
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    font = _font(size)
    for (x0, y0, x1, y1), label in zip(boxes, labels):
        w = draw.textlength(label, font=font)
        x = x0 + 8 if corner == "tl" else x1 - 8 - w
        draw.text((x, y0 + 6), label, fill=colour, font=font)
    return np.asarray(pil), boxes


@pytest.mark.parametrize("labels, corner", [(("A", "B"), "tl"), (("(a)", "(b)"), "tl"), (("1", "2"), "tr")])
def test_reader_reads_drawn_labels(labels, corner):
    from data.subfigure.ocr import get_reader

    rgb, boxes = _two_panel_figure(labels, corner)
    found = get_reader().read(rgb, boxes)
    assert [c[0].label for c in found] == [parse_label(label) for label in labels]
    assert all(c[0].corner == corner and c[0].confidence > 0.5 for c in found)


def test_reader_returns_nothing_for_unlabelled_panels():
    from data.subfigure.ocr import get_reader

    rng = np.random.default_rng(2)
    rgb = np.full((200, 420, 3), 255, np.uint8)
    boxes = [(10, 10, 200, 190), (220, 10, 410, 190)]
    for x0, y0, x1, y1 in boxes:
        rgb[y0:y1, x0:x1] = rng.integers(100, 140, (y1 - y0, x1 - x0, 3), dtype=np.uint8)
    found = get_reader().read(rgb, boxes)
    assert len(found) == 2
    assert all(not any(c.distance < 0.3 and c.confidence > 0.8 for c in cands) for cands in found)


@pytest.mark.skipif(__import__("shutil").which("tesseract") is None, reason="tesseract is not installed")
def test_tesseract_fallback_reads_digits():
    from data.subfigure.ocr import LabelReader

    rgb, boxes = _two_panel_figure(("1", "2"), "tr")
    found = LabelReader(backend="tesseract").read(rgb, boxes)
    assert [c[0].label for c in found] == ["1", "2"]


def test_unknown_backend_is_an_error():
    from data.subfigure.ocr import LabelReader, OCRUnavailable

    with pytest.raises(OCRUnavailable):
        LabelReader(backend="nonsense")


def test_a_label_just_outside_the_panel_box_is_read():
    # The cutter may leave a label printed in the gutter (or beside an axis title) out of the panel box:
    # the top-left window reaches beyond the corner when nothing the caption names is found inside.
    from data.subfigure.ocr import get_reader

    rng = np.random.default_rng(3)
    img = np.full((600, 1000, 3), 255, np.uint8)  # corner windows of 0.16 x 600 = 96 px, 24 px beyond the corner
    boxes = [(30, 30, 480, 580), (520, 30, 970, 580)]
    for x0, y0, x1, y1 in boxes:
        img[y0:y1, x0:x1] = rng.integers(20, 90, (y1 - y0, x1 - x0, 3), dtype=np.uint8)
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    font = _font(20)
    for (x0, y0, _, _), label in zip(boxes, "AB"):
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        draw.text((x0 - 3 - right, y0 - 3 - bottom), label, fill="black", font=font)  # ends 3 px above-left
    found = get_reader().read(np.asarray(pil), boxes, lambda t: t in ("A", "B"))
    assert [c[0].label if c else None for c in found] == ["A", "B"]
    # Outside the corner, so farther than a label printed inside (about 0.05 of a window side there).
    assert all(0.2 < c[0].distance < 0.9 for c in found)
