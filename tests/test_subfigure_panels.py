"""Panel detection on hand-built figures whose panel boxes we know exactly."""

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from data.subfigure.metrics import match_panels, panel_split_score
from data.subfigure.panels import detect_panels, reading_order


def _font(size):
    import os

    import matplotlib
    from PIL import ImageFont

    return ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans-Bold.ttf"), size)


def _texture(rng, h, w, dark=False):
    """A photo-like panel: smooth random field plus noise, never uniform along a row or column."""
    base = rng.integers(0, 120 if dark else 200, (max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(base).resize((w, h), Image.BILINEAR)).astype(np.int16)
    img += rng.integers(-20, 20, img.shape, dtype=np.int16)
    return np.clip(img + (0 if dark else 30), 0, 255).astype(np.uint8)


def _figure(boxes, size, background=(255, 255, 255), seed=0, dark=False):
    rng = np.random.default_rng(seed)
    canvas = np.zeros((size[1], size[0], 3), np.uint8)
    canvas[:] = background
    for x0, y0, x1, y1 in boxes:
        canvas[y0:y1, x0:x1] = _texture(rng, y1 - y0, x1 - x0, dark)
    return canvas


def _assert_found(pred, gt):
    """Every ground-truth panel is hit by exactly one prediction and nothing else is predicted."""
    assert len(pred) == len(gt), (pred, gt)
    assert panel_split_score(pred, gt) == 1.0, (pred, gt)


GRID = [(10, 10, 200, 150), (204, 10, 390, 150), (10, 154, 200, 300), (204, 154, 390, 300)]


def test_white_grid_with_3px_gaps():
    pred = detect_panels(_figure(GRID, (400, 310)))
    _assert_found(pred, GRID)
    # Boxes are tight: within 2 px of the truth.
    for p, g in zip(pred, GRID):
        assert max(abs(a - b) for a, b in zip(p, g)) <= 2


def test_black_background():
    pred = detect_panels(_figure(GRID, (400, 310), background=(0, 0, 0)))
    _assert_found(pred, GRID)


def test_outer_frame_does_not_hide_the_gaps():
    fig = _figure(GRID, (400, 310))
    fig[0:2, :] = 0
    fig[-2:, :] = 0
    fig[:, 0:2] = 0
    fig[:, -2:] = 0
    _assert_found(detect_panels(fig), GRID)


def test_jpeg_noise_in_gaps():
    buf = io.BytesIO()
    Image.fromarray(_figure(GRID, (400, 310))).save(buf, format="JPEG", quality=40)
    buf.seek(0)
    _assert_found(detect_panels(Image.open(buf)), GRID)


def test_text_strip_under_the_row_is_not_a_panel():
    boxes = [(10, 10, 200, 180), (210, 10, 390, 180)]
    fig = Image.fromarray(_figure(boxes, (400, 230)))
    draw = ImageDraw.Draw(fig)
    draw.text((12, 195), "Arrows indicate the lesion; scale bars 100 um. Data are mean and SD.", fill=(0, 0, 0))
    pred = detect_panels(fig)
    assert len(pred) == 2
    assert panel_split_score(pred, boxes) == 1.0


def test_arrow_across_a_gap_between_images():
    boxes = [(10, 10, 190, 190), (210, 10, 390, 190)]
    fig = Image.fromarray(_figure(boxes, (400, 200)))
    ImageDraw.Draw(fig).line([(170, 100), (230, 100)], fill=(0, 0, 0), width=3)
    _assert_found(detect_panels(fig), boxes)


def test_plot_with_white_space_inside_axes_stays_one_panel():
    # A bar chart: axes box, bars separated by white space, tick labels below.
    fig = Image.new("RGB", (420, 300), "white")
    draw = ImageDraw.Draw(fig)
    draw.rectangle([40, 20, 400, 250], outline=(0, 0, 0), width=1)
    for i, height in enumerate([120, 200, 80, 160]):
        x = 70 + i * 85
        draw.rectangle([x, 250 - height, x + 40, 250], fill=(60, 60, 60))
        draw.text((x + 15, 258), f"G{i + 1}", fill=(0, 0, 0))
    pred = detect_panels(fig)
    assert len(pred) == 1


def test_nested_grid_and_reading_order():
    # Tall panel left; right column: one panel on top, two side by side below.
    boxes = [(10, 10, 200, 390), (210, 10, 390, 195), (210, 205, 295, 390), (305, 205, 390, 390)]
    pred = detect_panels(_figure(boxes, (400, 400)))
    _assert_found(pred, boxes)
    assert [m for m in match_panels(pred, boxes)] == [0, 1, 2, 3]


def test_unequal_sizes_keep_small_panels():
    boxes = [(5, 5, 300, 300), (310, 5, 395, 90), (310, 110, 395, 195), (310, 215, 395, 300)]
    _assert_found(detect_panels(_figure(boxes, (400, 305))), boxes)


def test_touching_panels_split_at_a_separator_line():
    boxes = [(0, 0, 200, 200), (204, 0, 400, 200)]
    fig = _figure(boxes, (400, 200), dark=True)
    fig[:, 200:204] = 255  # a white separator line between two dark images, no page margin
    _assert_found(detect_panels(fig), boxes)


def test_label_outside_the_panel_is_merged_not_a_panel():
    boxes = [(10, 40, 190, 200), (210, 40, 390, 200)]
    fig = Image.fromarray(_figure(boxes, (400, 210)))
    draw = ImageDraw.Draw(fig)
    font = _font(22)
    draw.text((12, 12), "A", fill=(0, 0, 0), font=font)
    draw.text((212, 12), "B", fill=(0, 0, 0), font=font)
    pred = detect_panels(fig)
    assert len(pred) == 2
    # The label joined its own panel: the box reaches up to it.
    assert pred[0][1] < 25 and pred[1][1] < 25
    assert panel_split_score(pred, boxes) == 1.0


@pytest.mark.parametrize("size", [(1, 1), (5, 3), (20, 20)])
def test_tiny_images_are_one_panel(size):
    assert detect_panels(np.full((size[1], size[0], 3), 128, np.uint8)) == [(0, 0, size[0], size[1])]


def test_uniform_image_is_one_panel():
    assert detect_panels(np.full((100, 120, 3), 255, np.uint8)) == [(0, 0, 120, 100)]


def test_reading_order_rows_then_columns():
    boxes = [(200, 0, 300, 90), (0, 0, 100, 200), (0, 210, 100, 300), (200, 100, 300, 200)]
    # Row 1: the tall panel at x=0 and the one at x=200; then the rest by rows.
    assert reading_order(boxes) == [1, 0, 3, 2]


# ---------------------------------------------------------------- issue 11: panels without gutters


def _touching(boxes, size, seed=0):
    """Panels that touch: each box filled with its own texture and brightness, no background between."""
    rng = np.random.default_rng(seed)
    canvas = np.zeros((size[1], size[0], 3), np.uint8)
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        tex = _texture(rng, y1 - y0, x1 - x0).astype(np.int16)
        tint = np.array([[40, -30, 10], [-40, 20, 30], [10, 40, -40], [-20, -20, 40]][k % 4], np.int16)
        canvas[y0:y1, x0:x1] = np.clip(tex + tint, 0, 255).astype(np.uint8)
    return canvas


ROW3 = [(0, 0, 200, 240), (200, 0, 400, 240), (400, 0, 600, 240)]


def test_touching_panels_split_at_the_colour_seam():
    _assert_found(detect_panels(_touching(ROW3, (600, 240))), ROW3)


@pytest.mark.parametrize("colour", [(255, 255, 255), (0, 0, 0)])
def test_thin_separator_lines_between_touching_panels(colour):
    img = _touching(ROW3, (600, 240), seed=3)
    for x in (200, 400):
        img[:, x - 1 : x + 1] = colour  # a 2 px line where the panels meet
    _assert_found(detect_panels(img), ROW3)


def test_framed_touching_panels_in_a_grid():
    boxes = [(0, 0, 250, 200), (250, 0, 500, 200), (0, 200, 250, 400), (250, 200, 500, 400)]
    img = _touching(boxes, (500, 400), seed=5)
    for x0, y0, x1, y1 in boxes:
        img[y0 : y0 + 2, x0:x1] = 0
        img[y1 - 2 : y1, x0:x1] = 0
        img[y0:y1, x0 : x0 + 2] = 0
        img[y0:y1, x1 - 2 : x1] = 0
    _assert_found(detect_panels(img), boxes)


def test_large_irregular_grid_with_spanning_cells():
    # 4 x 4 grid of touching panels, one spanning two columns, one spanning two rows: 14 panels.
    cells = []
    for r in range(4):
        for c in range(4):
            if (r, c) in ((0, 1), (2, 3), (3, 3)):
                continue  # covered by a spanning cell
            x0, y0 = c * 150, r * 120
            w = 300 if (r, c) == (0, 0) else 150
            h = 240 if (r, c) == (1, 3) else 120
            cells.append((x0, y0, x0 + w, y0 + h))
    # (1, 3) spans rows 1-2: drop the duplicate cell below it.
    cells = [b for b in cells if b != (450, 240, 600, 360)]
    img = _touching(cells, (600, 480), seed=7)
    for x0, y0, x1, y1 in cells:
        img[y0:y1, x0 : x0 + 2] = 255
        img[y0 : y0 + 2, x0:x1] = 255
    pred = detect_panels(img)
    assert panel_split_score(pred, cells) >= 0.9, (len(pred), len(cells))


def test_a_heat_map_is_not_cut_at_its_cells():
    # Uniform colour blocks with straight boundaries are one panel (a heat map), not a grid of panels.
    rng = np.random.default_rng(4)
    img = np.full((300, 400, 3), 255, np.uint8)
    cells = rng.integers(0, 255, (5, 6, 3), dtype=np.uint8)
    img[20:280, 30:370] = np.asarray(Image.fromarray(cells).resize((340, 260), Image.NEAREST))
    assert len(detect_panels(img)) == 1


def test_the_caption_count_vetoes_seams_inside_a_panel():
    # Two touching textured panels, the left one with a strong internal step: with the caption's
    # count (2) the internal step is not a cut.
    img = _touching([(0, 0, 300, 240), (300, 0, 600, 240)], (600, 240), seed=9)
    img[:, :150] = np.clip(img[:, :150].astype(np.int16) + 90, 0, 255).astype(np.uint8)
    boxes = [(0, 0, 300, 240), (300, 0, 600, 240)]
    _assert_found(detect_panels(img, expected=2), boxes)


def test_label_printed_above_a_panel_joins_it():
    img = _figure([(10, 40, 200, 200), (220, 40, 410, 200)], (420, 210))
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    font = _font(14)
    draw.text((12, 22), "a", fill=(0, 0, 0), font=font)  # a small label in the gutter above each panel
    draw.text((222, 22), "b", fill=(0, 0, 0), font=font)
    arr = np.asarray(pil)
    pred = detect_panels(arr)
    assert len(pred) == 2
    for x0, y0, x1, _ in pred:
        ink_top = int(np.flatnonzero((arr[:40, x0:x1].min(axis=2) < 128).any(axis=1))[0])
        assert y0 <= ink_top, (pred, ink_top)  # the box grew up to its label


def test_reading_order_by_columns():
    boxes = [(0, 0, 10, 10), (20, 0, 30, 10), (0, 20, 10, 30), (20, 20, 30, 30)]
    assert reading_order(boxes) == [0, 1, 2, 3]
    assert reading_order(boxes, by_columns=True) == [0, 2, 1, 3]


def test_framed_charts_with_wide_empty_bands_inside_still_split():
    # Two box plots, one above the other, each in a plot frame with a wide empty band between its
    # boxes: the frame's top and bottom lines cross that band from side to side, which marks it as
    # chart interior (not a gutter) even though the band leaves little room beside it.
    img = Image.new("RGB", (500, 700), "white")
    draw = ImageDraw.Draw(img)
    for top in (40, 420):
        draw.rectangle([40, top, 479, top + 259], outline="black")
        for x in (80, 400):
            draw.rectangle([x, top + 60, x + 40, top + 200], outline="black", width=2)
            draw.line([x + 20, top + 20, x + 20, top + 60], fill="black")
    gt = [(40, 40, 480, 300), (40, 420, 480, 680)]
    _assert_found(detect_panels(np.asarray(img)), gt)


def test_a_hairline_plot_frame_keeps_its_chart_whole():
    # Two bar charts in 1-px frames on a figure taller than the work size: after the downscale the
    # frame's top edge is faint. Counted as a gap row it joined the white above the frame to the white
    # inside it, the frame's sides no longer crossed that band, and the chart fell apart between its bars.
    img = Image.new("RGB", (1200, 1800), "white")
    draw = ImageDraw.Draw(img)
    gt = []
    for top in (120, 1000):
        draw.rectangle([90, top, 1180, top + 620], outline=(40, 40, 40), width=1)
        for x, height, colour in zip((150, 420, 690, 960), (470, 140, 80, 450), ("#3366cc", "#333", "#888", "#c33")):
            draw.rectangle([x, top + 620 - height, x + 200, top + 620], fill=colour)
        gt.append((90, top, 1181, top + 621))
    _assert_found(detect_panels(np.asarray(img)), gt)


def test_the_soft_edge_of_a_thick_frame_stays_a_margin():
    # Synthetic figure 164: nine panels in touching 2-3 px frames under a header line of column titles.
    # The faint rows beside a solid frame line are that line's margin; taken for a line of their own they
    # glued the header to the panels and the frames fell apart.
    from data.subfigure.synthetic import make_figure

    fig = make_figure(164)
    assert fig.meta["header"] and fig.meta["touching"]
    _assert_found(detect_panels(fig.image, len(fig.boxes)), fig.boxes)


def test_a_black_rule_beside_white_page_is_a_separator_line():
    # Rows 0-40: a chart's white page with ink; 41-47: white margin; 48: a 1 px black rule; 49-99: a photo.
    # The white margin and the rule are two runs of different colour: the rule alone is the line, with white
    # page on one side and the photo on the other (taken together, 8 rows, they were too wide for a line).
    from data.subfigure.seams import separator_lines

    rng = np.random.default_rng(0)
    gray = np.full((100, 300), 255, np.uint8)
    gray[5:40, ::7] = 0  # chart ink: no row of the chart is uniform
    gray[48] = 0
    gray[49:] = rng.integers(60, 200, (51, 300), dtype=np.uint8)
    lines = separator_lines(gray, 0)
    assert np.flatnonzero(lines).tolist() == [48]
    # A grey rule as light as the page beside it is no rule.
    gray[48] = 200
    assert not separator_lines(gray, 0)[48]


def test_charts_over_a_row_parted_by_black_rules():
    # Family-2 dev figure 6120: a wide chart over a photo, a chart and a heat map, parted by 1 px black
    # rules; a border line down the left edge crosses the white margin under the chart, so only the rules
    # show the panels.
    from data.subfigure.realistic2 import make_realistic2_figure

    fig = make_realistic2_figure(6120)
    _assert_found(detect_panels(fig.image, len(fig.boxes)), fig.boxes)
