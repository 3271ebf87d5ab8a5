"""End to end against the local emulator: PMC with every fault, reruns, refusals, Open-i, local dumps, lists."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from data.scraper.http import FetchError, RefusedError
from data.scraper.pipeline import ConfigError, ScrapeContext, run_all, step_lists, step_split
from data.scraper.splits import load_records, split_by_article
from scrape_fakes import (
    FakeServices,
    Fault,
    assert_clean_output,
    fast_config,
    fig,
    jats_article,
    make_image,
    output_files,
    pmc_world,
    simple_world,
)


def _run(config):
    with ScrapeContext(config) as ctx:
        return run_all(ctx)


def test_pmc_end_to_end_with_every_fault(tmp_path):
    out = tmp_path / "out"
    with FakeServices() as services:
        expected = pmc_world(services)
        report = _run(fast_config(out, services, email="me@lab.org"))
        esearch = services.requests_to("/eutils/esearch.fcgi")
        efetch = services.requests_to("/eutils/efetch.fcgi")

    records = assert_clean_output(out)
    keys = [f"{r['pmcid']}/{r['figure_id']}/{r['graphic']}" for r in records]
    assert keys == expected["keys"]
    assert {k: r["caption"] for k, r in zip(keys, records, strict=True)} == expected["captions"]
    by_key = dict(zip(keys, records, strict=True))
    for key, data in expected["images"].items():
        assert (out / by_key[key]["image"]).read_bytes() == data
    assert by_key["PMC1002/F3a/fig3a.tif"]["license"] == "CC BY-NC"
    assert by_key["PMC1001/F1/gr1"]["license"] == "CC BY" and by_key["PMC1001/F1/gr1"]["pmid"] == "31000001"
    assert by_key["PMC1005/F1/fig1"]["source_url"].endswith("/PMC1005.tar.gz#fig1.jpg")  # fallback route
    assert by_key["PMC1002/F3a/fig3a.tif"]["source_url"].endswith("/PMC1002.2/fig3a.jpg")  # latest version, JPEG

    assert report["status"] == "exhausted"
    assert report["figures"]["downloaded"] == len(records)
    assert report["figures"]["skipped"] == expected["figure_skips"]
    assert report["figures"]["failed_will_retry"] == expected["figure_failed"]
    assert report["articles"]["skipped"] == expected["article_skips"]
    assert report["search"]["skipped"] == {"duplicate_article": 1}
    assert report["this_run"]["http"]["retries"]["http_429"] == 1
    assert json.loads((out / "report.json").read_text())["figures"] == report["figures"]

    # polite: tool/email on every E-utilities call, ids sent by POST, Retry-After honoured
    assert all(r.query["tool"] == ["medvlp"] and r.query["email"] == ["me@lab.org"] for r in esearch)
    assert all(r.method == "POST" for r in efetch)
    assert esearch[1].t - esearch[0].t >= 0.95
    # nothing escaped the output folder
    assert not list(tmp_path.rglob("evil*")) and not list(tmp_path.rglob("escape*"))

    lists = {name: json.loads((out / f"retrieval_{name}.json").read_text()) for name in ("train", "val", "test")}
    pmcids = {name: {e["pmcid"] for e in part} for name, part in lists.items()}
    assert not (pmcids["train"] & pmcids["val"]) and not (pmcids["train"] & pmcids["test"])
    assert not (pmcids["val"] & pmcids["test"])
    assert sorted(e["image"] for part in lists.values() for e in part) == sorted(r["image"] for r in records)
    assert json.loads((out / "pretrain.json").read_text()) == records
    assert all(isinstance(e["caption"], list) for e in lists["val"] + lists["test"])
    assert all(isinstance(e["caption"], str) and e["image_id"] for e in lists["train"])


def test_rerun_changes_nothing_and_retries_only_transient_failures(tmp_path):
    out = tmp_path / "out"
    with FakeServices() as services:
        pmc_world(services)
        _run(fast_config(out, services))
        first = (out / "figures.json").read_bytes()
        before = len(services.log)
        report = _run(fast_config(out, services))
        new = [r.path for r in services.log[before:]]
    assert (out / "figures.json").read_bytes() == first
    assert report["figures"]["failed_will_retry"] == {"malformed": 1, "timeout": 1}
    # only the two transient failures are tried again: the hanging image and the broken metadata
    assert {p for p in new if p.startswith("/bucket/PMC1004")} == {"/bucket/PMC1004.1/gr9.jpg"}
    assert "/bucket/metadata/PMC1007.1.json" in new
    assert not [p for p in new if p.startswith("/eutils")]
    assert_clean_output(out)


def test_num_stops_early_and_fetches_only_what_it_needs(tmp_path):
    with FakeServices() as services:
        keys = simple_world(services, 8, 3)
        report = _run(fast_config(tmp_path, services, num=4))
        efetch_ids = [r for r in services.requests_to("/eutils/efetch.fcgi")]
    records = assert_clean_output(tmp_path)
    assert [f"{r['pmcid']}/{r['figure_id']}/{r['graphic']}" for r in records] == keys[:4]
    assert report["status"] == "complete" and report["articles"]["pending"] > 0
    assert len(efetch_ids) == 1  # one batch of 3 articles = 9 candidates >= 4


def test_repeated_refusals_stop_cleanly_then_resume(tmp_path, capsys):
    with FakeServices() as services:
        keys = simple_world(services, 2, 3)
        for k in keys[2:]:
            pmcid, fig_id, href = k.split("/")
            services.sticky[f"/bucket/{pmcid}.1/{href}.jpg"] = Fault.status_code(429, {"Retry-After": "0"})
        with pytest.raises(RefusedError):
            _run(fast_config(tmp_path, services))
        report = json.loads((tmp_path / "report.json").read_text())
        assert report["status"] == "stopped" and report["figures"]["downloaded"] == 2
        assert not [f for f in output_files(tmp_path) if f.endswith(".tmp")]
        services.sticky.clear()
        report = _run(fast_config(tmp_path, services))
    records = assert_clean_output(tmp_path)
    assert [f"{r['pmcid']}/{r['figure_id']}/{r['graphic']}" for r in records] == keys
    assert report["status"] == "exhausted"


def test_a_dead_service_stops_the_run_instead_of_failing_everything(tmp_path):
    with FakeServices() as services:
        keys = simple_world(services, 3, 4)
        for key in keys[1:]:
            pmcid, _, href = key.split("/")
            services.sticky[f"/bucket/{pmcid}.1/{href}.jpg"] = Fault.status_code(500)
        with pytest.raises(FetchError, match="4 downloads in a row failed"):
            _run(fast_config(tmp_path, services, max_failures_in_a_row=4, workers=1))
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["status"] == "stopped" and report["figures"]["downloaded"] == 1
    assert report["figures"]["failed_will_retry"] == {"http_500": 4}  # the rest stays pending, untouched
    assert report["figures"]["pending"] == 7


def test_efetch_outage_stops_after_three_batches_and_resumes(tmp_path):
    with FakeServices() as services:
        keys = simple_world(services, 12, 1)
        services.sticky["/eutils/efetch.fcgi"] = Fault.status_code(502)
        with pytest.raises(FetchError, match="HTTP 502"):
            _run(fast_config(tmp_path, services, fetch_batch=2))
        report = json.loads((tmp_path / "report.json").read_text())
        assert report["status"] == "stopped"
        assert report["articles"]["failed_will_retry"] == {"http_502": 6} and report["articles"]["pending"] == 6
        services.sticky.clear()
        _run(fast_config(tmp_path, services, fetch_batch=2))
    records = assert_clean_output(tmp_path)
    assert [f"{r['pmcid']}/{r['figure_id']}/{r['graphic']}" for r in records] == keys


def test_commercial_licence_option_skips_nc_articles_and_records_the_rest(tmp_path):
    with FakeServices() as services:
        pmc_world(services)
        services.faults.clear()  # faults are covered above; this test is about licences
        services.sticky.clear()
        report = _run(fast_config(tmp_path, services, license="commercial"))
        term = services.requests_to("/eutils/esearch.fcgi")[0].query["term"][0]
    assert "cc by license[filter]" in term and term.startswith("(brain MRI) AND open access[filter]")
    assert report["articles"]["skipped"]["license_excluded"] == 1  # PMC1002 is CC BY-NC
    records = load_records(tmp_path / "figures.json")
    assert {r["license"] for r in records} == {"CC BY"} and "PMC1002" not in {r["pmcid"] for r in records}


def test_bucket_licence_overrides_the_xml_and_unknown_licences_fail_strict_options(tmp_path):
    with FakeServices() as services:
        simple_world(services, 3, 1)
        services.bucket_meta["PMC2002.1"]["license_code"] = "CC BY-NC"  # PMC's reading differs from the XML's
        services.articles["PMC2003"] = jats_article(
            "PMC2003", fig("F1", "gr1", "A figure without licence."), license_xml=""
        )
        report = _run(fast_config(tmp_path, services, license="cc"))
        assert report["figures"]["downloaded"] == 3  # CC BY-NC is Creative Commons
        assert report["figures"]["skipped"] == {}
    with FakeServices() as services:
        simple_world(services, 3, 1)
        services.bucket_meta["PMC2002.1"]["license_code"] = "CC BY-NC"
        services.bucket_meta["PMC2003.1"]["license_code"] = ""
        services.articles["PMC2003"] = jats_article(
            "PMC2003", fig("F1", "gr1", "A figure without licence."), license_xml=""
        )
        report = _run(fast_config(tmp_path / "commercial", services, license="commercial"))
    assert report["figures"]["skipped"] == {"license_excluded": 1, "license_unknown": 1}
    assert [r["pmcid"] for r in load_records(tmp_path / "commercial" / "figures.json")] == ["PMC2001"]
    assert load_records(tmp_path / "figures.json")[1]["license"] == "CC BY-NC"


def test_other_job_in_the_same_folder_is_refused(tmp_path):
    with FakeServices() as services:
        simple_world(services, 1, 1)
        _run(fast_config(tmp_path, services))
        with pytest.raises(ConfigError, match="already holds a different scrape"):
            _run(fast_config(tmp_path, services, query="lung CT"))
        with ScrapeContext(fast_config(tmp_path, services)):
            with pytest.raises(ConfigError, match="another scrape.py is already writing"):
                ScrapeContext(fast_config(tmp_path, services))


def test_stale_temp_files_of_a_killed_run_are_removed(tmp_path):
    stale = tmp_path / "images" / "PMC2001" / ".PMC2001_F1_x.jpg.k3j2.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half")
    with FakeServices() as services:
        simple_world(services, 1, 2)
        report = _run(fast_config(tmp_path, services))
    assert not stale.exists() and report["this_run"]["stale_temp_files_removed"] == 1
    assert_clean_output(tmp_path)


def _openi_item(n: int, caption: str, path: str, **extra) -> dict:
    """An Open-i item in the recorded shape (tests/data/scrape/openi_search.json): uid per article, bare pmcid."""
    item = {
        "uid": f"PMC30{n:02d}",
        "pmcid": f"30{n:02d}",
        "pmid": f"2000{n:02d}",
        "docSource": "PMC",
        "journal_title": "J Neuroimaging",
        "journal_date": {"year": "2015", "month": "3", "day": ""},
        "title": f"Case <i>{n}</i>",
        "image": {"id": f"F{n}", "caption": caption, "mention": "", "modalityMajor": "MRI"},
        "licenseType": "open-access",
        "licenseURL": "https://creativecommons.org/licenses/by/4.0/",
        "ccLicense": "by",
        "imgLarge": path,
        "imgThumb": path.replace("/imgs/512/", "/imgs/150/"),
        "detailedQueryURL": f"/detailedresult?img={path.rsplit('/', 1)[-1].removesuffix('.png')}&req=4",
    }
    item.update(extra)
    return item


def test_openi_end_to_end(tmp_path):
    with FakeServices() as services:
        items = [
            _openi_item(1, "<b>Axial</b> T2 image &amp; FLAIR showing edema.", "/imgs/512/1/3001/PMC3001_f1.png"),
            _openi_item(2, "Not Available.", "/imgs/512/1/3002/PMC3002_f2.png"),
            _openi_item(3, "Sagittal T1 after contrast injection.", "/imgs/512/1/3003/PMC3003_f3.png"),
            _openi_item(4, "An error page instead of the image.", "/imgs/512/1/3004/PMC3004_f4.png"),
            _openi_item(5, "Coronal FLAIR image of the lesion.", "/imgs/512/1/3005/PMC3005_f5.png"),
            _openi_item(1, "<b>Axial</b> T2 image &amp; FLAIR showing edema.", "/imgs/512/1/3001/PMC3001_f1.png"),
            _openi_item(
                6,
                "Diffusion image of the same patient.",
                "/imgs/512/1/3006/PMC3006_f6.png",
                licenseURL="https://creativecommons.org/licenses/by-nc/4.0/",
                ccLicense="bync",
            ),
            {"uid": "x", "image": {"caption": "no image url here at all"}},
            _openi_item(7, "A page the server garbles on first try.", "/imgs/512/1/3007/PMC3007_f7.png"),
        ]
        services.openi_items = items
        for n in (1, 2, 3, 5, 6, 7):
            services.openi_files[f"/imgs/512/1/30{n:02d}/PMC30{n:02d}_f{n}.png"] = (
                make_image(80, 60, 300 + n),
                "image/png",
            )
        services.openi_files["/imgs/512/1/3004/PMC3004_f4.png"] = (b"<html><body>Error 503</body></html>", "text/html")
        services.fault("/openi/api/search", Fault.body_of(b'{"total": 9, "list": [', "application/json"))
        report = _run(fast_config(tmp_path, services, source="openi", openi_image_type="xg", openi_page=4))
        searches = services.requests_to("/openi/api/search")
    records = assert_clean_output(tmp_path)
    assert [r["pmcid"] for r in records] == ["PMC3001", "PMC3003", "PMC3005", "PMC3006", "PMC3007"]
    assert records[0]["caption"] == "Axial T2 image & FLAIR showing edema."
    assert records[0]["title"] == "Case 1" and records[0]["year"] == "2015" and records[0]["license"] == "CC BY"
    assert records[3]["license"] == "CC BY-NC"
    assert records[0]["source_url"].endswith("/openi/imgs/512/1/3001/PMC3001_f1.png")
    assert report["search"]["skipped"] == {"duplicate_figure": 1, "no_image_url": 1}
    assert report["figures"]["skipped"] == {"bad_content_type": 1, "caption_too_short": 1}
    assert [(s.query["m"], s.query["n"]) for s in searches] == [(["1"], ["4"])] * 2 + [(["5"], ["8"]), (["9"], ["12"])]
    assert all(s.query["it"] == ["xg"] and s.query["coll"] == ["pmc"] for s in searches)


def test_unreadable_search_pages_are_skipped_and_counted(tmp_path):
    garbage = Fault.body_of(b'{"total": 8, "list": [{"uid": ', "application/json")
    with FakeServices() as services:
        services.openi_items = [
            _openi_item(n, f"Caption number {n} of the series.", f"/imgs/512/1/30{n:02d}/f{n}.png") for n in range(1, 9)
        ]
        for n in range(1, 9):
            services.openi_files[f"/imgs/512/1/30{n:02d}/f{n}.png"] = (make_image(80, 60, 500 + n), "image/png")
        services.fault("/openi/api/search", garbage, garbage, garbage)  # 1 try + 2 retries: page 1 is lost
        report = _run(fast_config(tmp_path / "openi", services, source="openi", openi_page=4))
    assert [r["pmcid"] for r in load_records(tmp_path / "openi" / "figures.json")] == [
        f"PMC30{n:02d}" for n in (5, 6, 7, 8)
    ]
    assert report["search"]["skipped"] == {"malformed_page": 1}
    with FakeServices() as services:
        keys = simple_world(services, 6, 1)
        services.fault("/eutils/esearch.fcgi", *[Fault.body_of(b"<html>Bad Gateway</html>", "text/html")] * 3)
        report = _run(fast_config(tmp_path / "pmc", services))
    records = load_records(tmp_path / "pmc" / "figures.json")
    assert [f"{r['pmcid']}/{r['figure_id']}/{r['graphic']}" for r in records] == keys[3:]
    assert report["search"]["skipped"] == {"malformed_page": 1}


def _local_dump(root: Path) -> dict[str, bytes]:
    a = root / "PMC4001"
    a.mkdir(parents=True)
    images = {"f1": make_image(70, 50, 401, "JPEG"), "f2": make_image(70, 50, 402)}
    (a / "PMC4001.nxml").write_text(
        jats_article(
            "PMC4001",
            fig("F1", "f1", "Local figure one with a caption.")
            + fig("F2", "f2.tif", "Local figure two with a caption.")
            + fig("F3", "missing", "A figure whose file is missing.")
            + fig("F4", "../PMC4002/g1", "Reaching into another folder."),
        )
    )
    (a / "f1.jpg").write_bytes(images["f1"])
    (a / "f2.png").write_bytes(images["f2"])
    b = root / "nested" / "PMC4002.1"
    b.mkdir(parents=True)
    (b / "PMC4002.1.xml").write_text(
        jats_article("PMC4002", fig("F1", "g1", "Second article figure from a bucket copy."), new_style_id=False)
    )
    (b / "g1.jpg").write_bytes(make_image(70, 50, 403, "JPEG"))
    (root / "broken.xml").write_text("<article><body>")
    (root / "front_only.xml").write_text(jats_article("PMC4003", None))
    return images


def test_from_local_dump(tmp_path):
    images = _local_dump(tmp_path / "dump")
    with FakeServices() as services:  # only to prove no request is made
        report = _run(fast_config(tmp_path / "out", services, source="local", local_dir=tmp_path / "dump", query=""))
        assert services.log == []
    records = assert_clean_output(tmp_path / "out")
    assert [(r["pmcid"], r["figure_id"]) for r in records] == [("PMC4001", "F1"), ("PMC4001", "F2"), ("PMC4002", "F1")]
    assert (tmp_path / "out" / records[1]["image"]).read_bytes() == images["f2"]  # "f2.tif" href -> f2.png file
    assert records[0]["source_url"] == "PMC4001/f1.jpg"
    assert report["figures"]["skipped"] == {"image_missing": 1, "unsafe_href": 1}
    assert report["articles"]["skipped"] == {"malformed_xml": 1, "no_body": 1}


def test_lists_use_subfigures_json_when_present(tmp_path):
    with FakeServices() as services:
        simple_world(services, 3, 2)
        _run(fast_config(tmp_path, services))
    figures = load_records(tmp_path / "figures.json")
    panels = []
    for parent in figures:
        for label in ("a", "b"):
            panels.append(
                {
                    "image": f"crops/{Path(parent['image']).stem}_{label}.png",
                    "caption": f"panel {label}",
                    "label": label,
                    "parent": parent["image"],
                    "box": [0, 0, 10, 10],
                    "alignment": "ocr",
                    "pmcid": parent["pmcid"],
                }
            )
    sub = tmp_path / "subfigures"
    sub.mkdir()
    (sub / "subfigures.json").write_text(json.dumps(panels))
    with FakeServices() as services:
        simple_world(services, 3, 2)
        with ScrapeContext(fast_config(tmp_path, services, split=True)) as ctx:
            result = step_lists(ctx)
        pretrain = json.loads((tmp_path / "pretrain.json").read_text())
        assert result["input"] == "subfigures/subfigures.json" and result["pretrain"] == 12
        assert pretrain[0]["image"] == "subfigures/" + panels[0]["image"]  # relative to pretrain.json's folder
        parts = [json.loads((tmp_path / f"retrieval_{n}.json").read_text()) for n in ("train", "val", "test")]
        assert [len({e["pmcid"] for e in p}) for p in parts] == [1, 1, 1]
        with ScrapeContext(fast_config(tmp_path, services, split=False)) as ctx:
            assert step_lists(ctx)["input"] == "figures.json"


def test_split_step_explains_a_missing_splitter(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "data.subfigure", None)  # as if issue 5's package were absent
    with FakeServices() as services:
        simple_world(services, 1, 1)
        with ScrapeContext(fast_config(tmp_path, services)) as ctx:
            with pytest.raises(ConfigError, match="--no_split"):
                step_split(ctx)


def test_split_by_article_properties():
    records = [{"image": f"i{n}.jpg", "caption": "c", "pmcid": f"PMC{n % 23}"} for n in range(200)]
    train, val, test = split_by_article(records, (0.8, 0.1, 0.1), seed=3)
    ids = [{r["pmcid"] for r in part} for part in (train, val, test)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert sorted(r["image"] for r in train + val + test) == sorted(r["image"] for r in records)
    assert [len(i) for i in ids] == [19, 2, 2]  # 23 articles: round(2.3) each for val and test
    assert split_by_article(records, (0.8, 0.1, 0.1), seed=3) == (train, val, test)
    assert [len(p) for p in split_by_article(records[:3], (0.8, 0.1, 0.1))] == [1, 1, 1]
    with pytest.raises(ValueError):
        split_by_article(records, (1.0, -0.5, 0.5))


def test_load_records_names_file_and_record(tmp_path):
    bad = tmp_path / "figures.json"
    bad.write_text('[{"image": "a.jpg", "caption": "ok"}, {"image": 3}]')
    with pytest.raises(ValueError, match=r"figures.json: record 1 needs string 'image' and 'caption'"):
        load_records(bad)
    bad.write_text("[{]")
    with pytest.raises(ValueError, match=r"figures.json:1:3: malformed JSON"):
        load_records(bad)
