"""Each converter on small files in its source's published layout, bad records counted by reason."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.convert.__main__ import main as convert_main
from data.convert.csv_sources import QUILT_LICENSE, convert_openclip_csv, convert_quilt
from data.convert.folder import convert_folder
from data.convert.medicat import convert_medicat, convert_medicat_subcaptions
from data.convert.pmc_oa import convert_pmc_oa
from data.convert.roco import convert_roco
from utils.errors import DatasetError


def _image(path: Path, size=(40, 30), seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = (np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(path)
    return path


def _truncated(path: Path) -> Path:
    _image(path, (64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_roco_layout_with_licences_dlinks_and_bad_lines(tmp_path):
    part = tmp_path / "data" / "train" / "radiology"
    part.mkdir(parents=True)
    (part / "captions.txt").write_text(
        "ROCO_00002\t Axial CT of the <i>chest</i>.\n"
        "ROCO_00003\t Sagittal MRI.\n"
        "ROCO_00004\t   \n"                       # empty caption
        "no tab on this line\n"                  # malformed
        "ROCO_00005\t Missing image.\n"          # no file
        "ROCO_00002\t Duplicate id.\n"           # duplicate
        "ROCO_00006\t Truncated file.\n"
    )
    (part / "licences.txt").write_text(
        "ROCO_ID,PMC_ID,CC\nROCO_00002,PMC4083729_AMHSR-4-14-g002.jpg,CC BY-NC-SA\nROCO_00006,PMC1_x.jpg,CC BY\n"
    )
    (part / "dlinks.txt").write_text(
        "ROCO_00003\twget -r ftp://ftp.ncbi.nlm.nih.gov/pub/pmc/oa_package/cb/dd/PMC4327453.tar.gz -P /x\tgf05.jpg\n"
    )
    _image(part / "images" / "PMC4083729_AMHSR-4-14-g002.jpg")
    _image(part / "images" / "PMC4327453_gf05.jpg")
    _truncated(part / "images" / "PMC1_x.jpg")
    nonrad = tmp_path / "data" / "test" / "non-radiology"
    nonrad.mkdir(parents=True)
    (nonrad / "captions.txt").write_text("ROCO_81827\tA photo.\n")
    _image(nonrad / "images" / "ROCO_81827.jpg")  # repackaged naming

    conv = convert_roco(tmp_path / "data", image_check="decode")
    by_id = {r["source_id"]: r for r in conv.records}
    assert set(by_id) == {"ROCO_00002", "ROCO_00003", "ROCO_81827"}
    assert by_id["ROCO_00002"]["license"] == "CC BY-NC-SA" and by_id["ROCO_00002"]["pmcid"] == "PMC4083729"
    assert by_id["ROCO_00002"]["caption"] == "Axial CT of the chest."
    assert by_id["ROCO_00003"]["pmcid"] == "PMC4327453" and by_id["ROCO_00003"]["license"] == "unknown"
    assert by_id["ROCO_81827"]["subset"] == "non-radiology" and by_id["ROCO_81827"]["split"] == "test"
    assert all(r["source"] == "roco" for r in conv.records)
    assert dict(conv.skips.counts) == {
        "empty_caption": 1, "malformed_line": 1, "missing_image": 1, "duplicate_id": 1, "image_truncated": 1,
    }
    assert conv.seen == 8
    with pytest.raises(DatasetError, match="no ROCO captions.txt"):
        convert_roco(tmp_path / "nothing")


def test_pmc_oa_both_variants(tmp_path):
    images = tmp_path / "images"
    _image(images / "PMC212319_Fig3_4.jpg")
    _image(images / "PMC1_Fig1_1.jpg", seed=1)
    lines = [
        json.dumps({"image": "PMC212319_Fig3_4.jpg", "caption": "A. Real time image of ARF1-GFP",
                    "pmcid": "PMC212319", "url_name": "1471-2121-4-13-3.jpg"}),
        json.dumps({"image": "PMC1_Fig1_1.jpg", "caption": "B. Western blot"}),
        "{not json",
        json.dumps(["a list"]),
        json.dumps({"image": "gone.jpg", "caption": "x"}),
        json.dumps({"caption": "no image"}),
        json.dumps({"image": "PMC1_Fig1_1.jpg", "caption": "B. Western blot"}),  # duplicate
    ]
    (tmp_path / "pmc_oa.jsonl").write_text("\n".join(lines) + "\n")
    conv = convert_pmc_oa(tmp_path / "pmc_oa.jsonl", license="CC BY")
    assert [r["source_id"] for r in conv.records] == ["PMC212319_Fig3_4.jpg", "PMC1_Fig1_1.jpg"]
    assert conv.records[0]["url_name"] == "1471-2121-4-13-3.jpg" and conv.records[1]["pmcid"] == "PMC1"
    assert {r["source"] for r in conv.records} == {"pmc_oa"} and conv.records[0]["license"] == "CC BY"
    assert dict(conv.skips.counts) == {
        "malformed_json_line": 1, "not_an_object": 1, "missing_image": 1, "missing_image_field": 1,
        "duplicate_record": 1,
    }
    (tmp_path / "pmc_oa_beta.jsonl").write_text(lines[0] + "\n")
    beta = convert_pmc_oa(tmp_path / "pmc_oa_beta.jsonl")
    assert beta.records[0]["source"] == "pmc_oa_beta" and beta.records[0]["license"] == "unknown"


def _medicat_line(pdf_hash, fig_uri, caption, licence="cc-by", refs=None):
    return json.dumps({
        "pdf_hash": pdf_hash, "fig_key": "Figure1", "fig_uri": fig_uri, "s2_caption": caption,
        "s2orc_caption": caption, "s2orc_references": refs, "radiology": True, "scope": False,
        "predicted_type": "Medical images",
        "oa_info": {"doi": "10.1/x", "doi_url": "https://doi.org/10.1/x", "oa": {"license": licence}},
    })


def test_medicat_figures_and_subcaptions(tmp_path):
    figures = tmp_path / "figures"
    _image(figures / "57c9_2-Figure1-1.png", size=(100, 60))
    _image(figures / "26ab_3-Figure4-1.png", size=(50, 50), seed=2)
    (tmp_path / "medicat.jsonl").write_text("\n".join([
        _medicat_line("57c9", "2-Figure1-1.png", "Figure 1. (A) Barium enema and (B) endoscopy.",
                      refs=["... (Figure 1 )."]),
        _medicat_line("26ab", "3-Figure4-1.png", "Figure 4. MRI.", licence=None),
        _medicat_line("dead", "1-Figure1-1.png", "no file"),
        json.dumps({"fig_uri": "x.png"}),
        _medicat_line("57c9", "2-Figure1-1.png", "again"),
    ]) + "\n")
    conv = convert_medicat(tmp_path / "medicat.jsonl")
    assert [r["source_id"] for r in conv.records] == ["57c9_2-Figure1-1.png", "26ab_3-Figure4-1.png"]
    first = conv.records[0]
    assert first["license"] == "cc-by" and first["doi"] == "10.1/x" and first["references"] == ["... (Figure 1 )."]
    assert conv.records[1]["license"] == "unknown"
    assert dict(conv.skips.counts) == {"missing_image": 1, "missing_figure_id": 1, "duplicate_id": 1}

    tokens = [{"text": t} for t in "Figure 1 . ( A ) Barium enema and ( B ) endoscopy .".split()]
    accepted = {
        "pdf_hash": "57c9", "fig_uri": "2-Figure1-1.png", "answer": "accept", "tokens": tokens,
        "spans": [{"label": "A", "points": [[0, 0], [50, 0], [50, 60], [0, 60]]},
                  {"label": "B", "points": [[50, 0], [100, 0], [100, 60], [50, 60]]},
                  {"label": "C", "points": [[1, 1], [2, 2]]}],
        "subcaptions": {"A": [3, 4, 5, 6, 7], "B": [9, 10, 11, 12], "C": [0]},
    }
    rejected = dict(accepted, answer="reject")
    no_subcaptions = dict(accepted, subcaptions={})
    (tmp_path / "subcaptions.jsonl").write_text("\n".join(json.dumps(x) for x in (accepted, rejected, no_subcaptions)))
    sub = convert_medicat_subcaptions(tmp_path / "subcaptions.jsonl", crops_dir=tmp_path / "crops",
                                      licences={"57c9_2-Figure1-1.png": "cc-by"})
    assert [r["caption"] for r in sub.records] == ["( A ) Barium enema", "( B ) endoscopy"]
    assert [r["box"] for r in sub.records] == [[0, 0, 50, 60], [50, 0, 100, 60]]
    assert all(r["license"] == "cc-by" and r["source"] == "medicat_subcaption" for r in sub.records)
    crop = Image.open(sub.records[1]["image"])
    assert crop.size == (50, 60)
    assert dict(sub.skips.counts) == {"annotation_not_accepted": 1, "no_subcaptions": 1, "bad_box": 1}


def test_quilt_lookup_csv(tmp_path):
    images = tmp_path / "quilt_1m"
    _image(images / "a_image_1.jpg")
    _image(images / "b_image_2.jpg", seed=3)
    with open(tmp_path / "quilt_1M_lookup.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["", "caption", "image_path", "subset", "split", "pathology", "magnification", "height", "width"])
        writer.writerow([0, "H&E stain, 20x, tumour cells", "a_image_1.jpg", "quilt", "train", "['Breast']", 1, 30, 40])
        writer.writerow([1, "", "b_image_2.jpg", "openpath", "train", "", 0, 30, 40])
        writer.writerow([2, "lymphocytes", "b_image_2.jpg", "openpath", "val", "", 0, 30, 40])
        writer.writerow([3, "missing", "c.jpg", "pubmed", "train", "", 0, 30, 40])
    conv = convert_quilt(tmp_path / "quilt_1M_lookup.csv")
    assert [r["source_id"] for r in conv.records] == ["a_image_1.jpg", "b_image_2.jpg"]
    assert conv.records[0]["license"] == QUILT_LICENSE and conv.records[0]["subset"] == "quilt"
    assert dict(conv.skips.counts) == {"empty_caption": 1, "missing_image": 1}
    only_val = convert_quilt(tmp_path / "quilt_1M_lookup.csv", splits=("val",))
    assert [r["caption"] for r in only_val.records] == ["lymphocytes"] and only_val.skips.counts["other_split"] == 3
    (tmp_path / "bad.csv").write_text("foo,bar\n1,2\n")
    with pytest.raises(DatasetError, match="image_path"):
        convert_quilt(tmp_path / "bad.csv")


def test_openclip_csv_defaults_and_cli(tmp_path):
    _image(tmp_path / "imgs" / "x.png")
    (tmp_path / "train.csv").write_text(
        "filepath\ttitle\nimgs/x.png\tA chest film\nimgs/none.png\tgone\n\tno path\nimgs/x.png\t\t\textra\n"
    )
    conv = convert_openclip_csv(tmp_path / "train.csv", image_root=tmp_path, license="CC0")
    assert [(r["source_id"], r["caption"], r["license"]) for r in conv.records] == [("imgs/x.png", "A chest film", "CC0")]
    assert dict(conv.skips.counts) == {"missing_image": 1, "missing_image_field": 1, "extra_fields": 1}

    out = tmp_path / "out" / "mine.json"
    assert convert_main(["openclip_csv", str(tmp_path / "train.csv"), "--image-root", str(tmp_path),
                         "--out", str(out)]) == 0
    records = json.loads(out.read_text())
    assert records[0]["image"] == "../imgs/x.png"  # relative to the output file's folder
    report = json.loads((tmp_path / "out" / "mine.report.json").read_text())
    assert report["records_in"] == 4 and report["records_out"] == 1 and report["skipped_total"] == 3
    assert convert_main(["quilt", str(tmp_path / "absent.csv"), "--out", str(out)]) == 2


def test_folder_of_images_with_caption_files(tmp_path):
    root = tmp_path / "mine"
    _image(root / "case001.png")
    (root / "case001.txt").write_text("Axial CT, <b>left</b> kidney.\n")
    _image(root / "scans" / "ct_17.jpg", seed=1)
    (root / "scans" / "ct_17.txt").write_text("Sagittal MRI of the knee")
    _image(root / "no_caption.png", seed=2)                     # no .txt beside it
    (root / "orphan.txt").write_text("a caption without its image")
    _image(root / "blank.png", seed=3)
    (root / "blank.txt").write_text("   \n")                     # empty caption
    _truncated(root / "broken.png")
    (root / "broken.txt").write_text("truncated file")
    (root / "notes.md").write_text("ignored: neither an image nor a caption")

    conv = convert_folder(root, license="CC BY", image_check="decode")
    assert [(r["source_id"], r["caption"], r["license"], r["source"]) for r in conv.records] == [
        ("case001.png", "Axial CT, left kidney.", "CC BY", "folder"),
        ("scans/ct_17.jpg", "Sagittal MRI of the knee", "CC BY", "folder"),
    ]
    assert dict(conv.skips.counts) == {"missing_caption_file": 1, "caption_without_image": 1, "empty_caption": 1,
                                       "image_truncated": 1}
    assert conv.seen == 6

    out = tmp_path / "out" / "mine.json"
    assert convert_main(["folder", str(root), "--out", str(out), "--source-name", "mine"]) == 0
    # the default check reads headers only: the truncated file passes it (training skips it at load)
    assert [(r["image"], r["source"]) for r in json.loads(out.read_text())] == [
        ("../mine/broken.png", "mine"), ("../mine/case001.png", "mine"), ("../mine/scans/ct_17.jpg", "mine")]
    with pytest.raises(DatasetError, match="not a folder"):
        convert_folder(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        convert_folder(tmp_path / "empty")
