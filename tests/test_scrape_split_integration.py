"""scrape.py with its split step on (the default), end to end against the local emulator.

The served articles mix single figures with compound ones whose panels and labels are known: figures composed
here (panels side by side on white, labels drawn in the corner, PNG so crops can be compared pixel for pixel), one
from ``data.subfigure.synthetic`` (JPEG, its own ground-truth boxes), one compound figure whose labels are not drawn
(paired by reading order) and one whose caption names panels that the image does not have (kept whole).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

import scrape
from data.subfigure import split_caption
from data.subfigure.synthetic import PANEL_KINDS, make_figure
from scrape_fakes import FAST_FLAGS, FakeServices, fig, jats_article, make_image, simple_world

REPO = Path(__file__).resolve().parents[1]
LIST_FILES = ("figures.json", "pretrain.json", "retrieval_train.json", "retrieval_val.json", "retrieval_test.json")
SYNTHETIC_SEED = 206  # three panels, labels A-C drawn (data/subfigure/synthetic.py)


def compose(labels: list[str], kinds: list[str], *, seed: int, draw_labels: bool = True):
    """Panels in a row on white with 16 px gaps and a bold label in each top-left corner; returns (image, boxes)."""
    rng = np.random.default_rng(seed)
    width, height, gap = 220, 180, 16
    canvas = Image.new("RGB", (len(labels) * (width + gap) + gap, height + 2 * gap), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans-Bold.ttf"), 30)
    boxes = []
    for i, (label, kind) in enumerate(zip(labels, kinds, strict=True)):
        x0, y0 = gap + i * (width + gap), gap
        canvas.paste(Image.fromarray(PANEL_KINDS[kind](rng, width, height)), (x0, y0))
        if draw_labels:
            draw.text((x0 + 8, y0 + 6), label, font=font, fill="white", stroke_width=1, stroke_fill="black")
        boxes.append((x0, y0, x0 + width, y0 + height))
    return canvas, boxes


def encode(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, quality=95)
    return buf.getvalue()


def list_item_caption(lead: str, items: list[str]) -> str:
    """A JATS caption whose panels are <list-item>s; the scraper writes them as "(A) ... (B) ..."."""
    entries = "".join(f"<list-item><p>{text}</p></list-item>" for text in items)
    return f'{lead}</p><list list-type="alpha-upper">{entries}</list><p>'


def compound_world(services: FakeServices) -> dict:
    """Three single-figure articles and three articles with compound figures; returns the ground truth.

    ``truth`` maps ``PMCID/figure_id`` to the expected outcome: the panel boxes (reading order) or ``None`` for a
    figure that must stay whole.
    """
    truth: dict[str, list | None] = {}
    for key in simple_world(services, 3, 1):  # "Figure 1 of article PMC2001: axial MRI slice number 1." -> whole
        truth[key.rsplit("/", 1)[0]] = None

    labelled, labelled_boxes = compose(["A", "B"], ["ct", "mri"], seed=1)
    lower, lower_boxes = compose(["a", "b", "c"], ["mri", "ultrasound", "ct"], seed=2)
    items = ["Axial CT without contrast.", "Axial T2-weighted MRI."]
    body = fig(
        "F1", "gr1", list_item_caption("Brain MRI of a 40-year-old woman with headache.", items), "Figure 1"
    ) + fig("F2", "gr2", "(a) Sagittal MRI. (b) Doppler ultrasound of the neck. (c) Follow-up CT.", "Figure 2")
    services.articles["PMC3001"] = jats_article("PMC3001", f"<sec>{body}</sec>", doi="10.1/3001", pmid="33001")
    services.put_bucket_article(
        "PMC3001", {"gr1.png": encode(labelled, "PNG"), "gr2.png": encode(lower, "PNG")}, content_type="image/png"
    )
    truth["PMC3001/F1"], truth["PMC3001/F2"] = labelled_boxes, lower_boxes

    unlabelled, unlabelled_boxes = compose(["A", "B"], ["ct", "ct"], seed=3, draw_labels=False)
    body = fig("F1", "gr1", "(A) Axial CT before treatment. (B) Axial CT after treatment.", "Figure 1") + fig(
        "F2", "gr2", "(A) Coronal CT of the abdomen. (B) Sagittal reformation of the spine.", "Figure 2"
    )
    services.articles["PMC3002"] = jats_article("PMC3002", f"<sec>{body}</sec>", doi="10.1/3002")
    services.put_bucket_article(
        "PMC3002",
        {"gr1.jpg": encode(unlabelled, "JPEG"), "gr2.jpg": make_image(200, 150, 3002, "JPEG")},  # one "panel"
    )
    truth["PMC3002/F1"], truth["PMC3002/F2"] = unlabelled_boxes, None

    synthetic = make_figure(SYNTHETIC_SEED)
    services.articles["PMC3003"] = jats_article("PMC3003", fig("F1", "gr1", synthetic.caption, "Figure 1"))
    services.put_bucket_article("PMC3003", {"gr1.jpg": encode(synthetic.image, "JPEG")})
    truth["PMC3003/F1"] = synthetic.boxes
    services.search_ids += ["3001", "3002", "3003"]
    return truth


def scrape_command(services: FakeServices, out: Path) -> list[str]:
    """The all-in-one run, split step on (no --no_split); one split process so it stays light on CI."""
    return ["--query", "brain MRI", "--out", str(out), "--split_workers", "1", *FAST_FLAGS, *services.cli_flags()]


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def overlap(box, truth) -> float:
    """Intersection over the predicted box's area (the ImageCLEF panel criterion)."""
    w = min(box[2], truth[2]) - max(box[0], truth[0])
    h = min(box[3], truth[3]) - max(box[1], truth[1])
    return max(w, 0) * max(h, 0) / ((box[2] - box[0]) * (box[3] - box[1]))


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    """One server for the module (source URLs then match across runs) and one uninterrupted reference run."""
    out = tmp_path_factory.mktemp("reference")
    with FakeServices() as services:
        truth = compound_world(services)
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            assert scrape.main(scrape_command(services, out)) == 0, stderr.getvalue()
        yield {"services": services, "out": out, "truth": truth, "stderr": stderr.getvalue()}


def _by_parent(rows: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["parent"], []).append(row)
    return groups


def test_default_run_splits_compound_figures_and_lists_use_the_panels(scraped):
    out, truth = scraped["out"], scraped["truth"]
    figures = read_json(out / "figures.json")
    assert [f"{r['pmcid']}/{r['figure_id']}" for r in figures] == list(truth)
    report = read_json(out / "report.json")
    compound = [boxes for boxes in truth.values() if boxes]
    expected = {
        "figures": len(figures),
        "split": len(compound),
        "panels": sum(len(boxes) for boxes in compound),
        "whole": len(truth) - len(compound),
        "not_compound": 3,
        "unmatched": 1,
        "skipped": {},
    }
    assert {k: report["split"][k] for k in expected} == expected
    assert report["split"] == read_json(out / "subfigures" / "split_report.json")
    rows = read_json(out / "subfigures" / "subfigures.json")
    assert report["lists"]["input"] == "subfigures/subfigures.json"
    assert report["lists"]["pretrain"] == len(rows) == expected["panels"] + expected["whole"]
    assert (
        f"split: 8 figures, 4 split into {expected['panels']} panels, 4 kept whole (3 not compound, 1 unmatched)"
        in scraped["stderr"]
    )

    # Paths are relative to each JSON file's folder and point at crops that exist.
    for row in rows:
        assert not os.path.isabs(row["image"]) and (out / "subfigures" / row["image"]).is_file()
        assert (out / row["parent"]).is_file()
    pretrain = read_json(out / "pretrain.json")
    assert [r["image"] for r in pretrain] == [f"subfigures/{row['image']}" for row in rows]
    assert [{**r, "image": None} for r in pretrain] == [{**row, "image": None} for row in rows]

    # Every figure: split into its true panels with the caption's labels and subcaptions, or kept whole.
    parents = {r["image"]: r for r in figures}
    for image, group in _by_parent(rows).items():
        parent = parents[image]
        boxes = truth[f"{parent['pmcid']}/{parent['figure_id']}"]
        for row in group:  # provenance of the parent on every record
            for name in ("pmcid", "pmid", "doi", "license", "license_url", "source_url", "figure_id", "sha256"):
                assert row.get(name) == parent.get(name), name
            assert row["parent_label"] == parent["label"]
        with Image.open(out / image) as img:
            whole = img.convert("RGB")
        if boxes is None:
            (row,) = group
            assert (row["alignment"], row["label"], row["caption"]) == ("whole", None, parent["caption"])
            assert row["box"] == [0, 0, parent["width"], parent["height"]]
            assert (out / "subfigures" / row["image"]).read_bytes() == (out / image).read_bytes()
            continue
        assert [(row["label"], row["caption"]) for row in group] == split_caption(parent["caption"])
        assert len(group) == len(boxes)
        for row, true_box in zip(group, boxes, strict=True):
            assert overlap(row["box"], true_box) > 0.66 and overlap(true_box, row["box"]) > 0.66, (row, true_box)
            with Image.open(out / "subfigures" / row["image"]) as crop:
                x0, y0, x1, y1 = row["box"]
                assert crop.size == (x1 - x0, y1 - y0)
                if image.endswith(".png"):  # lossless: the crop is exactly that part of the parent
                    assert np.array_equal(np.asarray(crop.convert("RGB")), np.asarray(whole.crop(row["box"])))
    alignments = {f"{parents[row['parent']]['pmcid']}/{row['label']}": row["alignment"] for row in rows}
    assert alignments["PMC3002/A"] == alignments["PMC3002/B"] == "order"  # no labels drawn
    assert alignments["PMC3001/a"] == "ocr"
    # The <list-item> panels of the JATS caption reach the splitter as "(A) ... (B) ...".
    lead = "Brain MRI of a 40-year-old woman with headache."
    assert [(r["label"], r["caption"]) for r in pretrain if r["pmcid"] == "PMC3001" and r["figure_id"] == "F1"] == [
        ("A", f"{lead} Axial CT without contrast."),
        ("B", f"{lead} Axial T2-weighted MRI."),
    ]


def test_retrieval_split_is_by_article_and_panels_inherit_their_article(scraped):
    out = scraped["out"]
    rows = read_json(out / "subfigures" / "subfigures.json")
    parts = {name: read_json(out / f"retrieval_{name}.json") for name in ("train", "val", "test")}
    pmcid_of = {f"subfigures/{row['image']}": row["pmcid"] for row in rows}
    articles = {name: {pmcid_of[e["image"]] for e in part} for name, part in parts.items()}
    assert all(e["pmcid"] == pmcid_of[e["image"]] for part in parts.values() for e in part)
    assert not articles["train"] & articles["val"] and not articles["train"] & articles["test"]
    assert not articles["val"] & articles["test"]
    assert [len(a) for a in articles.values()] == [4, 1, 1]  # 6 articles, 0.8 / 0.1 / 0.1
    assert sorted(e["image"] for part in parts.values() for e in part) == sorted(pmcid_of)
    # all panels of one figure are in one part
    part_of = {e["image"]: name for name, part in parts.items() for e in part}
    for group in _by_parent(rows).values():
        assert len({part_of[f"subfigures/{row['image']}"] for row in group}) == 1
    captions = {f"subfigures/{row['image']}": row["caption"] for row in rows}
    for e in parts["train"]:
        assert e["caption"] == captions[e["image"]] and e["image_id"] == e["image"].rsplit(".", 1)[0]
    for e in parts["val"] + parts["test"]:
        assert e["caption"] == [captions[e["image"]]]


def test_a_figure_that_cannot_be_split_stays_whole_with_its_full_caption(scraped):
    out = scraped["out"]
    figures = {f"{r['pmcid']}/{r['figure_id']}": r for r in read_json(out / "figures.json")}
    parent = figures["PMC3002/F2"]
    assert len(split_caption(parent["caption"])) == 2  # the caption names panels A and B ...
    rows = [r for r in read_json(out / "pretrain.json") if r["parent"] == parent["image"]]
    assert len(rows) == 1  # ... but the image is one picture: one record, whole, the caption untouched
    full = "(A) Coronal CT of the abdomen. (B) Sagittal reformation of the spine."
    assert rows[0]["caption"] == parent["caption"] == full
    assert (rows[0]["alignment"], rows[0]["label"], rows[0]["box"]) == ("whole", None, [0, 0, 200, 150])
    assert read_json(out / "report.json")["split"]["unmatched"] == 1


def _run_split_cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_scrape_split_subcommand_equals_python_m_data_subfigure(scraped, tmp_path):
    figures_json = scraped["out"] / "figures.json"
    via_scrape, via_module = tmp_path / "scrape", tmp_path / "module"
    common = ["--input", str(figures_json), "--no_progress", "--workers", "1"]
    first = _run_split_cli([sys.executable, "scrape.py", "split", *common, "--out", str(via_scrape)])
    second = _run_split_cli([sys.executable, "-m", "data.subfigure", *common, "--out", str(via_module)])
    (out1, err1), (out2, err2) = first.communicate(timeout=120), second.communicate(timeout=120)
    assert first.returncode == 0, err1
    assert second.returncode == 0, err2
    printed = [{k: v for k, v in json.loads(text).items() if k != "seconds"} for text in (out1, out2)]
    assert printed[0] == printed[1] and printed[0]["split"] == 4
    files, twin = _files(via_scrape), _files(via_module)
    reports = [json.loads(f.pop("split_report.json")) for f in (files, twin)]
    assert [{k: v for k, v in r.items() if k not in ("seconds", "skipped_examples")} for r in reports] == printed
    assert files == twin  # crops (bytes), subfigures.json, the resume journal
    # ... and the same as the split step of the all-in-one run (paths are relative to the output folder)
    assert files["subfigures.json"] == (scraped["out"] / "subfigures" / "subfigures.json").read_bytes()
    assert {n for n in files if n.startswith("crops/")} == {
        n for n in _files(scraped["out"] / "subfigures") if n.startswith("crops/")
    }
    bad = subprocess.run(
        [sys.executable, "scrape.py", "split", "--input", str(tmp_path / "none.json"), "--out", str(tmp_path / "x")],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert bad.returncode == 2 and "none.json: input list not found" in bad.stderr


def _journal_lines(out: Path) -> int:
    journal = out / "subfigures" / ".split_progress.jsonl"
    return journal.read_text().count("\n") if journal.exists() else 0


def _ok_images(out: Path) -> int:
    return len(list((out / "images").rglob("*.*"))) if (out / "images").exists() else 0


@pytest.mark.parametrize("kill_during", ["download", "split"])
def test_kill_9_then_rerun_gives_the_same_lists_with_the_split_step_on(scraped, tmp_path, kill_during):
    services, reference = scraped["services"], scraped["out"]
    out = tmp_path / "resumed"
    command = [sys.executable, str(REPO / "scrape.py"), *scrape_command(services, out)]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    if kill_during == "download":  # the 5th image request never returns
        services.held.clear()
        services.unhold.clear()
        services._served_prefix, services.hold_after, services.hold_prefix = 0, 4, "/bucket/PMC"
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        if kill_during == "download":
            assert services.held.wait(60), "the scrape never reached the held request"
            # the requests served before the held one may still be in flight in other workers
            while _ok_images(out) < 1 and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
        else:  # wait until the split step has finished its first figure
            while _journal_lines(out) < 1 and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
        assert process.poll() is None, "the run ended before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        killed_at = _journal_lines(out)
    finally:
        services.hold_prefix = None
        services.unhold.set()
        if process.poll() is None:
            process.kill()
    assert not (out / "subfigures" / "subfigures.json").exists() and not (out / "pretrain.json").exists()
    if kill_during == "split":
        assert 1 <= killed_at < 8
    else:
        assert 0 < _ok_images(out) < 8 and not (out / "figures.json").exists()

    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for name in (*LIST_FILES, "subfigures/subfigures.json"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    crops = {n: b for n, b in _files(out / "subfigures").items() if n.startswith("crops/")}
    assert crops == {n: b for n, b in _files(reference / "subfigures").items() if n.startswith("crops/")}
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    split = read_json(out / "report.json")["split"]
    assert split["resumed"] == killed_at  # figures split before the kill are not split again
    assert {k: split[k] for k in ("split", "panels", "whole")} == {
        k: read_json(reference / "report.json")["split"][k] for k in ("split", "panels", "whole")
    }


def test_steps_one_by_one_with_scrape_split_equal_the_all_in_one_run(scraped, tmp_path, capsys):
    services, reference, out = scraped["services"], scraped["out"], tmp_path / "steps"
    flags = [*FAST_FLAGS, *services.cli_flags()]
    assert scrape.main(["search", "--query", "brain MRI", "--out", str(out), *flags]) == 0
    for step in ("fetch", "download", "clean"):
        assert scrape.main([step, "--out", str(out), *flags]) == 0
    split = ["split", "--input", str(out / "figures.json"), "--out", str(out / "subfigures"), "--no_progress"]
    assert scrape.main(split) == 0
    assert scrape.main(["lists", "--out", str(out), *flags]) == 0
    for name in (*LIST_FILES, "subfigures/subfigures.json"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    report = read_json(out / "report.json")
    assert report["split"] == read_json(out / "subfigures" / "split_report.json") and report["split"]["panels"] == 10
    assert "split: 8 figures, 4 split into 10 panels" in capsys.readouterr().err


def test_split_workers_is_its_own_option(tmp_path, capsys):
    from data.scraper.pipeline import MAX_SPLIT_WORKERS, ConfigError, ScrapeConfig

    main_parser, _ = scrape.build_parsers()
    args = main_parser.parse_args(["--query", "q", "--out", str(tmp_path), "--workers", "16", "--split_workers", "3"])
    config = scrape.config_from_args(args)
    assert (config.workers, config.effective_split_workers) == (16, 3)  # download threads != split processes
    default = ScrapeConfig(out=tmp_path).effective_split_workers
    assert 1 <= default <= min(MAX_SPLIT_WORKERS, os.cpu_count() or 1)
    with pytest.raises(ConfigError, match="--split_workers must be >= 1, got 0"):
        ScrapeConfig(out=tmp_path, split_workers=0).validate()
    assert scrape.main(["--query", "q", "--out", str(tmp_path / "o"), "--split_workers", "0"]) == 2
    assert "--split_workers must be >= 1" in capsys.readouterr().err
