"""vis.py end to end on a tiny checkpoint: figures, maps, lists, HTML, scores, every kind of image, errors."""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

import vis
from models import build_model
from models.gradcam import compute_gradcam
from tests.conftest import TEST_CAPTIONS, TINY_TEXT
from tests.vis_helpers import randomize_, tiny_vis_config, write_tiny_checkpoint
from visualize.runner import load_vis_model

CAPTION = "Axial CT shows a hyperdense lesion in the left frontal lobe."


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("vis")


@pytest.fixture(scope="module")
def checkpoint(workspace):
    return write_tiny_checkpoint(workspace)


def _pixels(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def images(workspace):
    """Figures as the scraper may deliver them."""
    folder = workspace / "figures"
    folder.mkdir()
    paths = {}
    Image.fromarray(_pixels(30, 50)[..., 0], mode="L").save(folder / "gray.png")
    paths["gray"] = (folder / "gray.png", (50, 30))
    ramp = (np.arange(40 * 24, dtype=np.uint32).reshape(24, 40) * 60).astype(np.uint16)
    Image.fromarray(ramp).save(folder / "ct16.png")  # 16-bit grayscale
    assert Image.open(folder / "ct16.png").mode.startswith("I")
    paths["16bit"] = (folder / "ct16.png", (40, 24))
    rgba = np.dstack([_pixels(20, 20), np.full((20, 20), 128, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(folder / "rgba.png")
    paths["rgba"] = (folder / "rgba.png", (20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.fromarray(_pixels(20, 44)).save(folder / "rotated.jpg", exif=exif.tobytes())
    paths["exif"] = (folder / "rotated.jpg", (20, 44))  # displayed as 20 wide, 44 high
    Image.fromarray(_pixels(24, 36)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(folder / "pal.png")
    assert Image.open(folder / "pal.png").mode == "P"
    paths["palette"] = (folder / "pal.png", (36, 24))
    Image.fromarray(_pixels(700, 2100)).save(folder / "wide.png")
    paths["large non-square"] = (folder / "wide.png", (2100, 700))
    return paths


def _run(argv, capsys):
    code = vis.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("kind", ["gray", "16bit", "rgba", "palette", "exif", "large non-square"])
def test_every_kind_of_figure_gives_a_figure_and_maps(checkpoint, images, workspace, kind, capsys):
    path, (width, height) = images[kind]
    out = workspace / "single" / f"{path.stem}.png"
    code, stdout, stderr = _run(["--checkpoint", checkpoint, "--image", path, "--caption", CAPTION, "--out", out],
                                capsys)
    assert code == 0, stderr
    assert "ITM match probability" in stdout
    assert Image.open(out).size[0] > 500  # a real figure
    described = json.loads(out.with_suffix(".json").read_text())
    maps = np.load(out.with_suffix(".npy"))
    words = "axial ct shows a hyperdense lesion in the left frontal lobe".split()
    assert described["rows"] == ["<whole caption>"] + words
    assert described["image_size"] == [width, height] and described["layer"] == 1
    assert maps.shape == (1 + len(words), 4, 4) and np.isfinite(maps).all() and maps.max() > 0


def test_text_is_drawn_as_text(checkpoint, images, workspace, capsys):
    out = workspace / "dollars.png"
    code, _, stderr = _run(["--checkpoint", checkpoint, "--image", images["gray"][0], "--caption",
                            "Costs $5 and $10, a $\\frac$ term", "--out", out], capsys)
    assert code == 0, stderr  # as mathtext, "$5 and $" would be maths and "$\frac$" an error
    assert json.loads(out.with_suffix(".json").read_text())["rows"][1:3] == ["costs", "$5"]


@pytest.mark.parametrize("suffix, magic", [(".pdf", b"%PDF-"), (".svg", b"<?xml"), (".jpg", b"\xff\xd8")])
def test_other_figure_formats(checkpoint, images, workspace, suffix, magic, capsys):
    out = workspace / f"fig{suffix}"
    code, _, stderr = _run(["--checkpoint", checkpoint, "--image", images["gray"][0], "--caption", CAPTION,
                            "--out", out, "--layer", "0"], capsys)
    assert code == 0, stderr
    assert out.read_bytes()[:len(magic)] == magic


def test_forty_word_caption(tmp_path, images, capsys):
    long_text = write_tiny_checkpoint(tmp_path, max_words=60, max_length=64,
                                      med_config=dict(TINY_TEXT, num_hidden_layers=3, max_position_embeddings=64))
    words = " ".join(TEST_CAPTIONS[:6]).split()[:40]
    out = tmp_path / "forty.png"
    code, _, stderr = _run(["--checkpoint", long_text, "--image", images["rgba"][0],
                            "--caption", " ".join(words), "--out", out], capsys)
    assert code == 0, stderr
    assert json.loads(out.with_suffix(".json").read_text())["rows"] == ["<whole caption>"] + words
    width, height = Image.open(out).size
    assert height > width  # a grid of panels (6 per row), not one long strip
    short = tmp_path / "short.png"
    code, _, stderr = _run(["--checkpoint", long_text, "--image", images["large non-square"][0], "--caption",
                            " ".join(words[:70]) + " " + " ".join(words[:30]), "--out", short], capsys)
    assert code == 0, stderr
    assert len(json.loads(short.with_suffix(".json").read_text())["rows"]) == 1 + 60  # max_words cuts as training


def test_loaded_checkpoint_reproduces_the_trained_model(checkpoint, workspace):
    config = tiny_vis_config(workspace)
    torch.manual_seed(0)
    original = build_model("pretrain", config)
    randomize_(original)  # the same weights write_tiny_checkpoint saved
    loaded = load_vis_model(checkpoint, device="cpu")
    assert type(loaded.model).__name__ == "BlipRetrieval"  # no decoder needed
    image = torch.randn(3, 32, 32)
    text = "axial ct shows a lesion"
    np.testing.assert_array_equal(compute_gradcam(original.eval(), image, text, 1).token_maps,
                                  compute_gradcam(loaded.model, image, text, 1).token_maps)


def test_retrieval_checkpoint_and_config_file_for_a_checkpoint_without_config(tmp_path, images, capsys):
    retrieval = write_tiny_checkpoint(tmp_path, kind="retrieval")
    code, _, stderr = _run(["--checkpoint", retrieval, "--image", images["rgba"][0], "--caption", CAPTION,
                            "--out", tmp_path / "r.png"], capsys)
    assert code == 0, stderr
    bare = write_tiny_checkpoint(tmp_path / "bare", with_config=False)
    code, _, stderr = _run(["--checkpoint", bare, "--image", images["rgba"][0], "--caption", CAPTION,
                            "--out", tmp_path / "b.png"], capsys)
    assert code == 2 and "carries no model config" in stderr and "--config" in stderr
    code, _, stderr = _run(["--checkpoint", bare, "--config", tmp_path / "bare" / "model_config.json",
                            "--image", images["rgba"][0], "--caption", CAPTION, "--out", tmp_path / "b.png"], capsys)
    assert code == 0, stderr


@pytest.fixture(scope="module")
def caption_list(workspace, images):
    folder = workspace / "list"
    folder.mkdir()
    Image.fromarray(_pixels(40, 60)).save(folder / "fig & #1.png")
    (folder / "broken.png").write_bytes(b"not an image at all")
    records = [
        {"image": "fig & #1.png", "caption": "<b>Axial</b> CT &amp; MRI: lesion in the left frontal lobe.",
         "boxes": [[30, 0, 60, 20]]},
        {"image": "missing.png", "caption": "A <script>alert(1)</script> caption"},
        {"image": "broken.png", "caption": "undecodable"},
        {"image": str(images["gray"][0]), "caption": ["first caption of two", "second caption"]},
        {"image": "fig & #1.png", "caption": ";;;"},
    ]
    path = folder / "pretrain.json"
    path.write_text(json.dumps(records))
    return path


def test_all_over_a_list_skips_bad_records_and_writes_an_escaped_index(checkpoint, caption_list, workspace,
                                                                      capsys):
    out_dir = workspace / "all"
    code, stdout, stderr = _run(["--checkpoint", checkpoint, "--json", caption_list, "--all", "--out_dir", out_dir],
                                capsys)
    assert code == 0, stderr
    assert "2 figures" in stdout and "3 skipped" in stdout and "index.html" in stdout
    page = (out_dir / "index.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "image file not found" in page and "not a recognised image format" in page and "empty after cleaning" in page
    assert 'href="../list/fig%20%26%20%231.png"' in page  # percent-encoded, & and # survive
    linked = re.findall(r'(?:src|href)="([^"]+\.(?:png|npy))"', page)
    local = [link for link in linked if not link.startswith("..")]
    assert len(local) >= 6 and all((out_dir / link.replace("%20", " ")).exists() for link in local)
    first = json.loads((out_dir / "00000_fig____1.json").read_text())
    assert first["caption"] == "axial ct & mri lesion in the left frontal lobe"  # pre_caption, as training
    assert first["image_size"] == [60, 40]
    assert json.loads((out_dir / "00003_gray.json").read_text())["caption"] == "first caption of two"


def test_caption_index_and_limit(checkpoint, caption_list, workspace, capsys):
    out = workspace / "second.png"
    code, _, stderr = _run(["--checkpoint", checkpoint, "--json", caption_list, "--index", "3", "--caption_index",
                            "1", "--out", out], capsys)
    assert code == 0, stderr
    assert json.loads(out.with_suffix(".json").read_text())["caption"] == "second caption"
    code, stdout, _ = _run(["--checkpoint", checkpoint, "--json", caption_list, "--all", "--limit", "1",
                            "--out_dir", workspace / "limited"], capsys)
    assert code == 0 and "1 figures" in stdout


def test_score_with_boxes(checkpoint, caption_list, workspace, capsys):
    out = workspace / "score.json"
    code, stdout, stderr = _run(["--checkpoint", checkpoint, "--json", caption_list, "--score", "--score_out", out],
                                capsys)
    assert code == 0, stderr
    summary = json.loads(out.read_text())
    assert summary["ground_truth"] == "record boxes"
    assert summary["caption"]["all"]["n"] == 1  # one record has boxes
    assert summary["caption"]["all"]["chance_pointing"] == pytest.approx(30 * 20 / (60 * 40))
    assert summary["skipped"] == {"missing": 1, "not_an_image": 1}
    assert "| caption | all | 1 |" in stdout


@pytest.mark.parametrize("extra, message", [
    (["--image", "{missing}", "--caption", CAPTION], "image file not found"),
    (["--image", "{broken}", "--caption", CAPTION], "not a recognised image format"),
    (["--image", "{gray}", "--caption", "..."], "empty after cleaning"),
    (["--image", "{gray}", "--caption", CAPTION, "--layer", "3"], "out of range: the fusion encoder has 3 layers"),
    (["--json", "{list}", "--index", "5"], "index 5 is outside the list (it has 5 records"),
    (["--json", "{list}", "--index", "3", "--caption_index", "2"], "caption index 2 is outside its 2 captions"),
    (["--json", "{nolist}", "--all"], "image-caption list not found"),
])
def test_bad_input_is_a_clear_error(checkpoint, images, caption_list, workspace, extra, message, capsys):
    values = {"missing": workspace / "nope.png", "broken": caption_list.parent / "broken.png",
              "gray": images["gray"][0], "list": caption_list, "nolist": workspace / "nolist.json"}
    argv = ["--checkpoint", checkpoint] + [a.format(**values) for a in extra]
    argv += [] if "--all" in extra else ["--out", workspace / "err.png"]
    code, _, stderr = _run(argv, capsys)
    assert code == 2
    assert message in stderr
    assert not (workspace / "err.png").exists()


def test_checkpoint_without_fusion_encoder(tmp_path, images, capsys):
    config = tiny_vis_config(tmp_path)
    vit_only = {k: v for k, v in build_model("retrieval", config).state_dict().items()
                if k.startswith("visual_encoder.")}
    torch.save({"model": vit_only, "config": config}, tmp_path / "vit_only.pth")
    code, _, stderr = _run(["--checkpoint", tmp_path / "vit_only.pth", "--image", images["gray"][0],
                            "--caption", CAPTION, "--out", tmp_path / "x.png"], capsys)
    assert code == 2 and "no fusion encoder" in stderr
    code, _, stderr = _run(["--checkpoint", tmp_path / "nothing.pth", "--image", images["gray"][0],
                            "--caption", CAPTION], capsys)
    assert code == 2 and "nothing.pth' not found" in stderr


@pytest.mark.parametrize("argv, message", [
    (["--image", "x.png"], "--image needs --caption"),
    (["--json", "l.json"], "either --index I or --all"),
    (["--json", "l.json", "--index", "1", "--all"], "either --index I or --all"),
    (["--score"], "--score needs --json"),
    (["--image", "x.png", "--caption", "c", "--out", "x.gif"], "--out must end in one of"),
    (["--image", "x.png", "--caption", "c", "--threads", "0"], "--threads must be >= 1"),
])
def test_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        vis.main(["--checkpoint", "c.pth"] + argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow
def test_package_figures_in_the_scrapers_formats(checkpoint, tmp_path, capsys):
    """The development set of real scientific images (bench/package_figures.py): whole figures and panels."""
    from bench.package_figures import build_package_figures

    lists = build_package_figures(tmp_path / "figures")
    modes = {record["mode"] for record in json.loads(lists["pretrain"].read_text())}
    assert {"I;16", "L", "P", "RGB", "RGBA"} <= modes
    for kind in ("pretrain", "subfigures"):
        code, stdout, stderr = _run(["--checkpoint", checkpoint, "--json", lists[kind], "--all",
                                     "--out_dir", tmp_path / kind], capsys)
        assert code == 0, stderr
        records = len(json.loads(lists[kind].read_text()))
        assert records >= 12 and f"{records} figures" in stdout and "0 skipped" in stdout
    code, stdout, stderr = _run(["--checkpoint", checkpoint, "--json", lists["subfigures"], "--score"], capsys)
    assert code == 0, stderr
    assert "| phrase | all | 4 |" in stdout  # the four panels of the compound figure, each with its phrase box
