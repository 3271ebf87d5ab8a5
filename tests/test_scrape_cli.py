"""scrape.py as users run it: steps one by one, `figures`, errors, and kill -9 in the middle of a run."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import scrape
from data.image_io import open_image
from scrape_fakes import FAST_FLAGS, FakeServices, Fault, assert_clean_output, jats_article, pmc_world, simple_world

REPO = Path(__file__).resolve().parents[1]


def test_steps_one_by_one_equal_the_all_in_one_run(tmp_path, capsys):
    with FakeServices() as services:
        pmc_world(services)
        services.faults.clear()  # fault handling is covered elsewhere; here: same result either way
        services.sticky.clear()
        flags = [*FAST_FLAGS, *services.cli_flags(), "--email", "me@lab.org"]
        together, steps = tmp_path / "together", tmp_path / "steps"
        assert scrape.main(["--query", "brain MRI", "--num", "7", "--out", str(together), "--no_split", *flags]) == 0
        assert scrape.main(["search", "--query", "brain MRI", "--num", "7", "--out", str(steps), *flags]) == 0
        # later steps take --num (and the query) from the folder
        assert scrape.main(["fetch", "--out", str(steps), *flags]) == 0
        assert scrape.main(["download", "--out", str(steps), *flags]) == 0
        assert scrape.main(["clean", "--out", str(steps), *flags]) == 0
        assert scrape.main(["lists", "--out", str(steps), "--no_split", *flags]) == 0
    for name in ("figures.json", "pretrain.json", "retrieval_train.json", "retrieval_val.json", "retrieval_test.json"):
        assert json.loads((steps / name).read_text()) == json.loads((together / name).read_text()), name
    assert len(json.loads((steps / "figures.json").read_text())) == 7
    assert "downloaded 7" in capsys.readouterr().err


def test_figures_subcommand_prints_json_lines(tmp_path, capsys):
    article = tmp_path / "PMC1.xml"
    article.write_text(
        jats_article(
            "PMC1",
            '<fig id="F1"><label>Figure 1</label><caption><p>Axial CT.</p></caption><graphic xlink:href="g1"/></fig>',
        )
    )
    front = tmp_path / "front.xml"
    front.write_text(jats_article("PMC2", None))
    broken = tmp_path / "broken.xml"
    broken.write_text("<article><body>")
    assert scrape.main(["figures", str(article), str(front)]) == 0
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [(d["pmcid"], d["figure_id"], d["label"], d["caption"], d["graphic"]) for d in lines] == [
        ("PMC1", "F1", "Figure 1", "Axial CT.", "g1")
    ]
    assert "front.xml: PMC2 has no <body>" in captured.err
    assert scrape.main(["figures", str(broken)]) == 2
    assert "broken.xml: malformed XML" in capsys.readouterr().err


def test_clear_errors_and_exit_codes(tmp_path, capsys, monkeypatch):
    assert scrape.main(["fetch", "--out", str(tmp_path / "empty")]) == 2
    assert "no scrape here yet" in capsys.readouterr().err
    assert scrape.main(["--out", str(tmp_path / "x")]) == 2
    assert "--query is required" in capsys.readouterr().err
    # NCBI's rule is checked before anything is sent: 20/s without a key is refused
    assert scrape.main(["--query", "q", "--out", str(tmp_path / "y"), "--ncbi_rate", "20"]) == 2
    assert "at most 3 requests/s" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "data.subfigure", None)
    assert scrape.main(["split", "--input", "x.json", "--out", "y"]) == 2
    assert "--no_split" in capsys.readouterr().err
    with FakeServices() as services:
        for key in simple_world(services, 1, 3):  # 3 tries each, 5 refusals in a row stop the run
            services.sticky[f"/bucket/PMC2001.1/{key.split('/')[-1]}.jpg"] = Fault.status_code(
                429, {"Retry-After": "0"}
            )
        flags = [*FAST_FLAGS, *services.cli_flags()]
        assert scrape.main(["--query", "q", "--out", str(tmp_path / "z"), "--no_split", *flags]) == 3
        assert re.search(r"stopped: the server refused \d+ requests in a row", capsys.readouterr().err)
        assert scrape.main(["--query", "other", "--out", str(tmp_path / "z"), "--no_split", *flags]) == 2
        assert "already holds a different scrape" in capsys.readouterr().err


def _ok_count(out: Path) -> int:
    db = sqlite3.connect(out / "manifest.sqlite")
    try:
        return db.execute("SELECT COUNT(*) FROM figures WHERE status = 'ok'").fetchone()[0]
    finally:
        db.close()


def test_kill_9_midway_then_rerun_equals_an_uninterrupted_run(tmp_path):
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    with FakeServices() as services:
        simple_world(services, 6, 4)
        base = [
            sys.executable,
            str(REPO / "scrape.py"),
            "--query",
            "brain MRI",
            "--num",
            "20",
            "--no_split",
            *FAST_FLAGS,
            *services.cli_flags(),
        ]
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        done = subprocess.run([*base, "--out", str(reference)], cwd=REPO, env=env, capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr.decode()

        services.hold_prefix, services.hold_after = "/bucket/PMC", 9  # the 10th image request never returns
        process = subprocess.Popen(
            [*base, "--out", str(resumed)], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            assert services.held.wait(60), "the scrape never reached the held request"
            deadline = time.monotonic() + 10
            while _ok_count(resumed) < 5 and time.monotonic() < deadline:
                time.sleep(0.05)
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
        finally:
            if process.poll() is None:
                process.kill()
        killed_at = _ok_count(resumed)
        print(f"killed with {killed_at} of 20 figures done")
        assert 0 < killed_at < 20 and not (resumed / "figures.json").exists()
        for image in (resumed / "images").rglob("*.jpg"):  # whatever exists after kill -9 is whole
            with open_image(image):
                pass

        services.hold_prefix = None
        services.unhold.set()
        done = subprocess.run([*base, "--out", str(resumed)], cwd=REPO, env=env, capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr.decode()

    records = assert_clean_output(resumed)
    assert len(records) == 20
    for name in ("figures.json", "pretrain.json", "retrieval_train.json", "retrieval_val.json", "retrieval_test.json"):
        assert (resumed / name).read_text() == (reference / name).read_text(), name
    report = json.loads((resumed / "report.json").read_text())
    assert report["figures"]["downloaded"] == 20 and report["status"] == "complete"
