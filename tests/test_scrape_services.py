"""scrape.py against PMC and Open-i as they are today (issue 13), on recorded responses.

Recorded responses (hand-written from the documented formats; files in tests/data/scrape/, details in
tests/data/scrape/SOURCES.md), all checked on 2026-12-01:

* PMC Cloud Service metadata JSON + article objects -- "Accessing PMC Article Datasets Using Amazon Web
  Services", https://pmc.ncbi.nlm.nih.gov/tools/pmcaws/ (JSON Metadata Objects, sample JSON object, bucket
  layout ``PMCxxxxx.N/`` and ``metadata/``; updated for the April 13, 2026 change);
* S3 ListObjectsV2 of an article's versions -- the same page ("List all versions belonging to a PMCID");
* ESearch JSON and its 10,000-record window -- https://www.ncbi.nlm.nih.gov/books/NBK25499/ (ESearch,
  ``retmax``) and the pmcaws FAQ; the ``[pmcrdat]`` date-range recipe -- pmcaws, "PMC Search Fields and
  Example Queries";
* the legacy OA Web Service record -- https://pmc.ncbi.nlm.nih.gov/tools/oa-service/ (and its April 13, 2026
  notice: legacy files under ``deprecated/``, removed August 2026);
* Open-i search JSON and ``Query-Error`` -- https://openi.nlm.nih.gov/services (not reachable from here) and
  the real field shapes listed in issue 13;
* JATS / NLM 2.x article with the licence only in ``<copyright-statement>`` (2007 PLoS ONE style) -- issue 13.

Each test here fails on the scraper as it was before issue 13 (see the closing report of the branch).
"""

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

import pytest
import requests

import scrape
from data.scraper import eutils, openi
from data.scraper.http import HttpClient, HttpSettings, RateLimiter
from data.scraper.jats import article_meta, iter_articles, parse_xml
from data.scraper.pipeline import ScrapeContext, run_all, step_search
from data.scraper.splits import load_records
from scrape_fakes import (
    ESEARCH_WINDOW,
    FAST_FLAGS,
    FakeServices,
    Fault,
    assert_clean_output,
    fast_config,
    fig,
    fixture,
    jats_article,
    make_image,
    make_tgz,
    md5_hex,
    simple_world,
)

REPO = Path(__file__).resolve().parents[1]
# The JSON properties NCBI documents for a metadata object, in the order of its sample object (pmcaws page).
DOCUMENTED_METADATA_KEYS = [
    "pmcid",
    "version",
    "pmid",
    "doi",
    "mid",
    "title",
    "citation",
    "is_pmc_openaccess",
    "is_manuscript",
    "is_historical_ocr",
    "is_retracted",
    "license_code",
    "pdf_url",
    "xml_url",
    "text_url",
    "media_urls",
]
S3_URL = re.compile(r"s3://pmc-oa-opendata/PMC\d+\.\d+/[^?/]+\?md5=[0-9a-f]{32}")


def _run(config):
    with ScrapeContext(config) as ctx:
        return run_all(ctx)


def _client() -> HttpClient:
    limiters = {"ncbi": RateLimiter(1000), "openi": RateLimiter(1000)}
    return HttpClient(limiters, HttpSettings(retries=1, backoff_base=0.01))


def _candidates(out: Path) -> dict[str, dict]:
    """Every figure of the manifest: key -> (status, reason, candidate JSON) as stored."""
    db = sqlite3.connect(out / "manifest.sqlite")
    try:
        rows = db.execute("SELECT key, status, reason, candidate FROM figures ORDER BY seq").fetchall()
    finally:
        db.close()
    return {key: {"status": status, "reason": reason, **json.loads(c)} for key, status, reason, c in rows}


# -- PMC Cloud Service: metadata with ?md5= URLs ----------------------------------------------------------
def test_metadata_fixture_and_fake_have_the_documented_shape():
    recorded = json.loads(fixture("PMC10000001.1.json"))
    assert list(recorded) == DOCUMENTED_METADATA_KEYS
    assert isinstance(recorded["pmid"], int) and recorded["mid"] is None and recorded["title"]
    urls = [recorded[k] for k in ("pdf_url", "xml_url", "text_url")] + recorded["media_urls"]
    assert all(S3_URL.fullmatch(u) for u in urls)
    for url in urls:  # each digest is the MD5 of the recorded object
        name = url.split("/")[-1].split("?")[0]
        local = name if name.startswith("PMC") else f"PMC10000001.1_{name}"
        assert url.endswith(f"?md5={md5_hex(fixture(local))}")
    with FakeServices() as services:
        gr1 = make_image(64, 48, 1, "JPEG")
        meta = services.put_bucket_article("PMC5", {"gr1.jpg": gr1}, title="T")
    assert list(meta) == DOCUMENTED_METADATA_KEYS
    assert [type(meta[k]) for k in DOCUMENTED_METADATA_KEYS if k not in ("pmid", "mid")] == [
        type(recorded[k]) for k in DOCUMENTED_METADATA_KEYS if k not in ("pmid", "mid")
    ]
    assert meta["media_urls"] == [f"s3://pmc-oa-opendata/PMC5.1/gr1.jpg?md5={md5_hex(gr1)}"]


def test_fake_listing_matches_the_recorded_listing():
    def shape(xml: bytes) -> list:
        root = parse_xml(xml, "listing")
        return [(re.sub(r"\{.*\}", "", el.tag), (el.text or "").strip() if len(el) == 0 else [c.text for c in el])
                for el in root if re.sub(r"\{.*\}", "", el.tag) not in ("KeyCount",)]

    with FakeServices() as services:
        services.put_bucket_article("PMC10000001", {"gr1.jpg": b"x"})
        answer = requests.get(f"{services.url}/bucket/", params={"list-type": "2", "prefix": "PMC10000001.",
                                                                 "delimiter": "/"}, timeout=5).content
    assert shape(answer) == shape(fixture("s3_list_versions.xml"))


def _recorded_pmc_article(services: FakeServices) -> None:
    """The recorded article version PMC10000001.1, served as NCBI serves it: efetch XML, listing, JSON, objects."""
    xml = fixture("PMC10000001.1.xml").decode()
    services.articles["PMC10000001"] = xml[xml.index("<article ") :]
    services.search_ids = ["10000001"]
    services.bucket_meta["PMC10000001.1"] = fixture("PMC10000001.1.json")  # verbatim
    for name, local, kind in (
        ("gr1.jpg", "PMC10000001.1_gr1.jpg", "image/jpeg"),
        ("gr2.png", "PMC10000001.1_gr2.png", "image/png"),
        ("PMC10000001.1.xml", "PMC10000001.1.xml", "application/xml"),
        ("PMC10000001.1.json", "PMC10000001.1.json", "application/json"),
    ):
        services.bucket_files[f"PMC10000001.1/{name}"] = (fixture(local), kind)


def test_recorded_metadata_with_md5_urls_gives_every_figure_and_its_digest(tmp_path):
    with FakeServices() as services:
        _recorded_pmc_article(services)
        report = _run(fast_config(tmp_path, services))
        image_requests = [(r.path, r.query) for r in services.requests_to("/bucket/PMC10000001.1/")]
    records = assert_clean_output(tmp_path)
    recorded = json.loads(fixture("PMC10000001.1.json"))
    assert [(r["figure_id"], r["graphic"]) for r in records] == [("fig1", "gr1"), ("fig2", "gr2")]
    assert [(tmp_path / r["image"]).read_bytes() for r in records] == [
        fixture("PMC10000001.1_gr1.jpg"),
        fixture("PMC10000001.1_gr2.png"),
    ]
    assert [r["md5"] for r in records] == [u.rsplit("md5=", 1)[1] for u in recorded["media_urls"]]
    assert all("?" not in r["source_url"] and r["route"] == "bucket" for r in records)
    assert sorted(image_requests) == [("/bucket/PMC10000001.1/gr1.jpg", {}), ("/bucket/PMC10000001.1/gr2.png", {})]
    assert records[0]["license"] == "CC BY" and records[0]["pmc_version"] == 1
    stored = _candidates(tmp_path)  # the digest is in the manifest too
    assert [c["md5"] for c in stored.values()] == [r["md5"] for r in records]
    assert report["figures"]["skipped"] == {} and report["routes"]["bucket"]["articles"] == 1


def test_md5_mismatch_is_retried_then_skipped_and_counted(tmp_path):
    with FakeServices() as services:
        keys = simple_world(services, 1, 3)
        good_gr1 = services.bucket_files["PMC2001.1/gr1.jpg"][0]
        other = make_image(64, 48, 999, "JPEG")  # a valid image, just not the published object
        services.fault("/bucket/PMC2001.1/gr1.jpg", Fault.body_of(good_gr1[: len(good_gr1) // 2], "image/jpeg"))
        services.bucket_files["PMC2001.1/gr2.jpg"] = (other, "image/jpeg")  # corrupt in the bucket: every try
        report = _run(fast_config(tmp_path, services))
        tries = {n: len(services.requests_to(f"/bucket/PMC2001.1/gr{n}.jpg")) for n in (1, 2, 3)}
    assert tries == {1: 2, 2: 3, 3: 1}  # 1 try + 1 retry that succeeds; 1 try + 2 retries; 1 try
    assert report["figures"]["skipped"] == {"md5_mismatch": 1}
    assert report["this_run"]["http"]["retries"]["md5_mismatch"] == 3
    records = assert_clean_output(tmp_path)
    assert [f"{r['pmcid']}/{r['figure_id']}/{r['graphic']}" for r in records] == [keys[0], keys[2]]
    assert (tmp_path / records[0]["image"]).read_bytes() == good_gr1
    stored = _candidates(tmp_path)
    assert (stored[keys[1]]["status"], stored[keys[1]]["reason"]) == ("skipped", "md5_mismatch")
    assert stored[keys[0]]["md5"] == md5_hex(good_gr1)


# -- the legacy OA-package route -------------------------------------------------------------------------
def _legacy_world(services: FakeServices) -> None:
    """PMC2001 in the bucket; PMC2002 and PMC2003 only in (legacy) OA packages."""
    simple_world(services, 1, 1)
    for n in (2, 3):
        pmcid = f"PMC200{n}"
        services.articles[pmcid] = jats_article(pmcid, fig("F1", "f1", f"Ultrasound of the liver, case {n}."))
        services.search_ids.append(pmcid[3:])
        services.oa_packages[pmcid] = make_tgz({f"{pmcid}/f1.jpg": make_image(64, 48, 70 + n, "JPEG")})


def test_legacy_route_404_is_reported_as_route_unavailable(tmp_path, capsys):
    with FakeServices() as services:
        _legacy_world(services)
        services.oa_packages_removed = True  # as since August 2026: oa.fcgi names packages the FTP no longer has
        flags = [*FAST_FLAGS, *services.cli_flags()]
        assert scrape.main(["--query", "q", "--out", str(tmp_path), "--no_split", *flags]) == 0
        probes = (len(services.requests_to("/oa/oa.fcgi")), len(services.requests_to("/ftp/")))
    err = capsys.readouterr().err
    report = json.loads((tmp_path / "report.json").read_text())
    assert probes == (1, 1)  # one probe, then the route is known to be gone
    assert report["figures"]["skipped"] == {"route_unavailable": 2}  # not media_not_found / not_in_bucket
    assert report["articles"]["skipped_at_download"] == {"route_unavailable": 2}
    assert report["routes"]["bucket"]["articles"] == 1 and report["routes"]["oa_package"]["articles"] == 0
    assert re.search(r"legacy OA package: unavailable: OA package \S+PMC200[23]\.tar\.gz: HTTP 404", err)
    assert "routes: bucket: 1 articles, 1 figures" in err


def test_oa_service_gone_is_route_unavailable_and_a_working_route_is_named(tmp_path):
    with FakeServices() as services:
        _legacy_world(services)
        services.sticky["/oa/oa.fcgi"] = Fault.status_code(404)
        report = _run(fast_config(tmp_path / "gone", services))
    assert report["figures"]["skipped"] == {"route_unavailable": 2}
    assert report["routes"]["oa_package"]["about"].startswith("legacy OA package: unavailable: OA Web Service")
    with FakeServices() as services:  # a mirror that still serves the packages: used, and named per article
        _legacy_world(services)
        report = _run(fast_config(tmp_path / "mirror", services))
    records = load_records(tmp_path / "mirror" / "figures.json")
    assert [(r["pmcid"], r["route"]) for r in records] == [
        ("PMC2001", "bucket"),
        ("PMC2002", "oa_package"),
        ("PMC2003", "oa_package"),
    ]
    assert report["routes"]["oa_package"] == {"articles": 2, "figures": 2, "about": "legacy OA package: working"}


# -- ESearch's 10,000-record window ----------------------------------------------------------------------
BIG = 12_345


def _big_search_world(services: FakeServices, undated: int = 0) -> list[str]:
    """``BIG`` PMC ids released 2015..2026 (relevance order = id order) plus ``undated`` ids without a date."""
    ids = [str(5_000_000 + i) for i in range(BIG + undated)]
    services.search_ids = ids
    for i, pmc in enumerate(ids[:BIG]):
        day = 1 + (i * 7919) % 4300  # spread over ~12 years, not in id order
        services.release_dates[pmc] = time.strftime("%Y/%m/%d", time.gmtime(1420070400 + day * 86400))
    return ids


def test_esearch_window_of_the_fake_matches_ncbi():
    with FakeServices() as services:
        _big_search_world(services)
        config = eutils.EutilsConfig(base_url=f"{services.url}/eutils")
        page = eutils.esearch(_client(), config, "q", retstart=9998, retmax=500)
        assert (page.count, len(page.ids)) == (BIG, 1)  # clamped at the window's end
        with pytest.raises(eutils.EutilsError, match="retstart' cannot be larger than 9998"):
            eutils.esearch(_client(), config, "q", retstart=ESEARCH_WINDOW, retmax=10)


def test_a_search_over_10000_hits_is_split_by_release_date(tmp_path):
    with FakeServices() as services:
        ids = _big_search_world(services, undated=3)
        with ScrapeContext(fast_config(tmp_path, services, search_page=2000)) as ctx:
            step_search(ctx, 10**9)
            state = ctx.manifest.get_meta("search_state")
            found = [row[0] for row in ctx.manifest.db.execute("SELECT article_id FROM articles ORDER BY seq")]
            counters = ctx.manifest.counters("search")
        requests = services.requests_to("/eutils/esearch.fcgi")
    assert sorted(found) == sorted(f"PMC{i}" for i in ids[:BIG]) and len(found) == len(set(found))
    assert counters == {}  # no duplicate_article: the windows do not overlap
    assert state["mode"] == "dates" and state["exhausted"] and state["count"] == BIG + 3
    assert (state["found"], state["truncated"], state["outside_windows"]) == (BIG, 0, 3)  # undated ids reported
    windows = set()
    for r in requests:
        assert int(r.query["retstart"][0]) + int(r.query["retmax"][0]) <= ESEARCH_WINDOW
        match = re.search(r"(\S+):(\S+)\[pmcrdat\]", r.query["term"][0])
        if match:
            windows.add(match.groups())
    dates = services.release_dates
    hits = {w: sum(w[0] <= d <= w[1] for d in dates.values()) for w in windows}
    leaves = sorted(w for w, n in hits.items() if n <= ESEARCH_WINDOW)  # the windows that were paged
    assert all(a[1] < b[0] for a, b in zip(leaves, leaves[1:], strict=False))  # pairwise disjoint
    assert sum(hits[w] for w in leaves) == BIG  # and together they hold every dated hit
    print(f"{len(requests)} ESearch requests, {len(leaves)} date windows paged")
    assert len(requests) < 40  # bisection plus pages, not one request per day


def test_one_day_over_the_window_is_taken_to_the_window_and_the_rest_counted(tmp_path):
    with FakeServices() as services:
        services.search_ids = [str(7_000_000 + i) for i in range(ESEARCH_WINDOW + 51)]
        services.release_dates = dict.fromkeys(services.search_ids, "2021/03/04")  # a bulk release
        with ScrapeContext(fast_config(tmp_path, services, search_page=5000)) as ctx:
            step_search(ctx, 10**9)
            state = ctx.manifest.get_meta("search_state")
            assert ctx.manifest.count("articles") == ESEARCH_WINDOW
            assert ctx.manifest.counters("search") == {"esearch_window_truncated": 51}
    assert (state["exhausted"], state["truncated"], state["outside_windows"]) == (True, 51, 0)


def test_an_unreadable_page_while_splitting_loses_nothing(tmp_path):
    garbage = Fault.body_of(b"<html>Bad Gateway</html>", "text/html")
    with FakeServices() as services:
        ids = _big_search_world(services)
        # requests 1-2 decide "dates" and split the first window; request 3 (a window's first page) stays unreadable
        services.fault("/eutils/esearch.fcgi", Fault.none(), Fault.none(), garbage, garbage, garbage)
        with ScrapeContext(fast_config(tmp_path, services, search_page=2000)) as ctx:
            step_search(ctx, 10**9)
            found = {row[0] for row in ctx.manifest.db.execute("SELECT article_id FROM articles")}
            assert ctx.manifest.counters("search") == {"malformed_page": 1}
    assert found == {f"PMC{i}" for i in ids}  # that page only probed a window that had to be split anyway


def test_search_states_written_before_date_splitting_are_continued():
    from data.scraper.pmc_search import PmcSearch  # imported here: the rest of this file also runs on older code

    planner = PmcSearch(None, eutils.EutilsConfig(), "q", page_size=100)  # upgrade() sends nothing
    assert planner.upgrade({"next": 300, "count": 1200, "exhausted": False})["mode"] == "relevance"
    assert planner.upgrade({"next": 0, "count": None, "exhausted": False})["mode"] is None
    big = planner.upgrade({"next": 9000, "count": 25000, "exhausted": False})
    assert (big["mode"], big["next"], big["windows"][0][0]) == ("dates", 0, "1900/01/01")


def _article_ids(out: Path) -> list[str]:
    db = sqlite3.connect(out / "manifest.sqlite")
    try:
        return [row[0] for row in db.execute("SELECT article_id FROM articles ORDER BY seq")]
    finally:
        db.close()


def test_split_search_resumes_after_kill_9_without_duplicates(tmp_path):
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    with FakeServices() as services:
        ids = _big_search_world(services)
        base = [sys.executable, str(REPO / "scrape.py"), "search", "--query", "q", "--num", "0",
                *FAST_FLAGS, "--search_page", "2000", *services.cli_flags()]
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        done = subprocess.run([*base, "--out", str(reference)], cwd=REPO, env=env, capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr.decode()
        # Hold the first request for a second page of a window: a page of ids is committed, more are to come.
        sent = services.requests_to("/eutils/esearch.fcgi")
        second_page = next(i for i, r in enumerate(sent) if r.query["retstart"] != ["0"])
        services.hold_prefix, services.hold_after = "/eutils/esearch.fcgi", second_page  # this one never returns
        process = subprocess.Popen([*base, "--out", str(resumed)], cwd=REPO, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert services.held.wait(60), "the search never reached the held request"
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
        finally:
            if process.poll() is None:
                process.kill()
        killed_at = len(_article_ids(resumed))
        assert 0 < killed_at < BIG, killed_at
        services.hold_prefix = None
        services.unhold.set()
        done = subprocess.run([*base, "--out", str(resumed)], cwd=REPO, env=env, capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr.decode()
    print(f"killed with {killed_at} of {BIG} articles found")
    found = _article_ids(resumed)
    assert found == _article_ids(reference)  # same articles in the same order as an uninterrupted search
    assert len(found) == len(set(found)) == BIG and set(found) == {f"PMC{i}" for i in ids}
    report = json.loads((resumed / "report.json").read_text())
    assert report["search"]["skipped"] == {} and report["search"]["state"]["exhausted"]


# -- retractions and OA status ---------------------------------------------------------------------------
def _flags_world(services: FakeServices) -> list[str]:
    keys = simple_world(services, 4, 2)
    services.bucket_meta["PMC2002.1"]["is_retracted"] = True
    services.bucket_meta["PMC2003.1"]["is_pmc_openaccess"] = False
    return keys


def test_retracted_and_non_open_access_articles_are_skipped_and_counted(tmp_path, capsys):
    with FakeServices() as services:
        keys = _flags_world(services)
        flags = [*FAST_FLAGS, *services.cli_flags()]
        assert scrape.main(["--query", "q", "--out", str(tmp_path / "default"), "--no_split", *flags]) == 0
        err = capsys.readouterr().err
        report = json.loads((tmp_path / "default" / "report.json").read_text())
        assert report["figures"]["skipped"] == {"not_open_access": 2, "retracted": 2}
        assert report["articles"]["skipped_at_download"] == {"not_open_access": 1, "retracted": 1}
        assert "articles skipped at download: not_open_access=1, retracted=1" in err
        assert {r["pmcid"] for r in load_records(tmp_path / "default" / "figures.json")} == {"PMC2001", "PMC2004"}
        assert scrape.main(
            ["--query", "q", "--out", str(tmp_path / "keep"), "--no_split", "--keep_retracted", *flags]
        ) == 0
    kept = load_records(tmp_path / "keep" / "figures.json")
    assert [f"{r['pmcid']}/{r['figure_id']}/{r['graphic']}" for r in kept] == keys[:4] + keys[6:]
    assert [r.get("retracted") for r in kept] == [None, None, True, True, None, None]
    report = json.loads((tmp_path / "keep" / "report.json").read_text())
    assert report["figures"]["skipped"] == {"not_open_access": 2} and report["job"]["keep_retracted"] is True


def test_retraction_in_the_legacy_oa_record_is_honoured(tmp_path):
    with FakeServices() as services:
        _legacy_world(services)
        services.oa_retracted.add("PMC2003")
        report = _run(fast_config(tmp_path, services))
    assert report["figures"]["skipped"] == {"retracted": 1}
    assert [r["pmcid"] for r in load_records(tmp_path / "figures.json")] == ["PMC2001", "PMC2002"]


# -- Open-i ----------------------------------------------------------------------------------------------
def _recorded_openi(services: FakeServices) -> list[dict]:
    items = json.loads(fixture("openi_search.json"))["list"]
    services.openi_items = items
    for n, item in enumerate(items):
        services.openi_files[item["imgLarge"]] = (make_image(80, 60, 600 + n), "image/png")
    return items


def test_openi_recorded_items_cclicense_ids_and_figures_without_image_id(tmp_path):
    with FakeServices() as services:
        _recorded_openi(services)
        report = _run(fast_config(tmp_path, services, source="openi", license="cc", openi_page=10))
    records = assert_clean_output(tmp_path)
    # ccLicense is read (licenseURL is empty, licenseType only says "open-access")
    assert [(r.get("pmcid"), r["license"]) for r in records] == [
        ("PMC4911020", "CC BY"),
        ("PMC4911020", "CC BY-NC-ND"),
        (None, "CC BY-NC-ND"),
    ]
    # uid names the article: the figure without image.id is its own figure, not a duplicate of the first
    assert len({r["figure_id"] for r in records}) == 3 and records[1]["figure_id"].startswith("img")
    assert [r["openi_uid"] for r in records] == ["PMC4911020", "PMC4911020", "CXR1"]
    assert records[2]["image"].startswith("images/CXR1/")
    assert all(r["source_url"].startswith(f"{services.url}/openi/imgs/512/") for r in records)  # relative imgLarge
    assert report["search"]["skipped"] == {} and report["figures"]["downloaded"] == 3


def test_openi_query_error_is_a_clear_error(tmp_path, capsys):
    with FakeServices() as services:
        _recorded_openi(services)
        flags = [*FAST_FLAGS, *services.cli_flags()]
        code = scrape.main(
            ["--query", "chest", "--source", "openi", "--openi_image_type", "zz", "--out", str(tmp_path),
             "--no_split", *flags]
        )
        assert code == 2  # not a silent empty result
        err = capsys.readouterr().err
        assert "error: Open-i rejected the request" in err and "Invalid value for parameter it" in err
        assert json.loads((tmp_path / "report.json").read_text())["status"] == "error"
        services.openi_items = []  # the recorded error body itself, as the API sends it
        services.fault("/openi/api/search", Fault.body_of(fixture("openi_query_error.json"), "application/json"))
        message = json.loads(fixture("openi_query_error.json"))["Query-Error"]
        with pytest.raises(openi.OpeniError, match=re.escape(message)):
            openi.search_page(_client(), openi.OpeniConfig(base_url=f"{services.url}/openi"), "chest", start=1, size=10)


# -- licences stated only in words -------------------------------------------------------------------------
def test_licence_in_copyright_statement_is_read():
    article = iter_articles(parse_xml(fixture("plos_one_2007_copyright_only.xml"), "plos"))[0]
    meta = article_meta(article)
    assert (meta.pmcid, meta.year, meta.license) == ("PMC1900001", "2007", "CC BY")
    plain = iter_articles(parse_xml(jats_article("PMC9", "<p/>", license_xml="").encode(), "x"))[0]
    assert article_meta(plain).license == "unknown"  # "(c) 2020 The Authors" names no licence


def test_licence_from_copyright_text_passes_license_cc_when_the_bucket_has_no_code(tmp_path):
    with FakeServices() as services:
        xml = fixture("plos_one_2007_copyright_only.xml").decode()
        services.articles["PMC1900001"] = xml[xml.index("<article ") :]
        services.search_ids = ["1900001"]
        services.put_bucket_article(
            "PMC1900001", {"pone.0000001.g001.jpg": make_image(64, 48, 7, "JPEG")}, license_code=None
        )
        report = _run(fast_config(tmp_path, services, license="cc"))
    assert report["figures"]["skipped"] == {}
    assert [(r["pmcid"], r["license"]) for r in load_records(tmp_path / "figures.json")] == [("PMC1900001", "CC BY")]
