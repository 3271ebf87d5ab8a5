"""Image verification, path-safe names, href safety, media matching, ordered workers, OA packages."""

from __future__ import annotations

import hashlib
import random
import threading
import time
from pathlib import Path

import pytest

from data.scraper.download import ImageLimits, SkipError, image_relpath, ordered_map, safe_join, verify_image_bytes
from data.scraper.http import HttpClient, HttpSettings, RateLimiter
from data.scraper.oa_bucket import BucketResolver, is_safe_href, match_media
from data.scraper.oa_package import LegacyPackageRoute
from scrape_fakes import FakeServices, make_flat_png, make_image, make_tgz

LIMITS = ImageLimits(max_bytes=200_000, max_pixels=1_000_000, min_side=32)


def _reason(data: bytes, content_type: str = "image/png", limits: ImageLimits = LIMITS) -> str:
    with pytest.raises(SkipError) as info:
        verify_image_bytes(data, content_type, limits, "http://x/fig.png")
    assert "http://x/fig.png" in str(info.value)  # the message names the source
    return info.value.reason


def test_verified_image_facts_match_an_independent_computation():
    data = make_image(120, 90, 1, "JPEG")
    image = verify_image_bytes(data, "image/jpeg; charset=binary", LIMITS, "src")
    assert (image.ext, image.width, image.height) == ("jpg", 120, 90)
    assert image.sha256 == hashlib.sha256(data).hexdigest()
    # S3 serves many objects as a generic octet-stream: accepted, the bytes decide
    assert verify_image_bytes(make_image(40, 40, 2), "binary/octet-stream", LIMITS, "src").ext == "png"


def test_every_bad_image_gets_its_reason():
    png = make_image(64, 64, 3)
    assert _reason(b"<!DOCTYPE html><html>Error</html>", "text/html") == "bad_content_type"
    assert _reason(b"<!DOCTYPE html><html>Error</html>", "image/png") == "not_an_image"
    assert _reason(png[: len(png) // 2]) == "truncated"
    assert _reason(b"") == "empty"
    assert _reason(make_image(20, 100, 4)) == "too_small"
    assert _reason(make_flat_png(2000, 2000)) == "too_large"  # pixel cap, caught from the header
    assert _reason(png, limits=ImageLimits(max_bytes=100, max_pixels=10**6, min_side=1)) == "too_large"
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n%%EndComments\nshowpage\n"
    assert _reason(eps, "application/octet-stream") == "unsupported_format"  # never handed to Ghostscript


def test_transient_reasons():
    assert SkipError("timeout", "").transient and SkipError("http_503", "").transient
    assert not SkipError("truncated", "").transient and not SkipError("http_404", "").transient


def test_image_names_are_safe_readable_and_unique(tmp_path):
    name = image_relpath("PMC1004", "F1", "PMC1004/F1/gr1", "jpg")
    assert name.startswith("images/PMC1004/PMC1004_F1_") and name.endswith(".jpg")
    hostile = image_relpath("../../etc", "../../passwd", "../../etc/passwd", "png")
    assert ".." not in hostile and hostile.count("/") == 2
    assert image_relpath("PMC1", "F1", "k1", "jpg") != image_relpath("PMC1", "F1", "k2", "jpg")
    with pytest.raises(ValueError):
        image_relpath("PMC1", "F1", "k", "j/pg")
    assert safe_join(tmp_path, name).is_relative_to(tmp_path.resolve())
    for bad in ("../outside.jpg", "images/../../x.jpg", "/etc/passwd", "."):
        with pytest.raises(ValueError, match="outside"):
            safe_join(tmp_path, bad)


@pytest.mark.parametrize(
    "href, safe",
    [
        ("gr1", True),
        ("pone.0012345.g001", True),
        ("fig3a.tif", True),
        ("figures/f1.jpg", True),
        ("../../etc/passwd", False),
        ("figs/../../x", False),
        ("/abs/path.jpg", False),
        ("C:\\win.jpg", False),
        ("http://evil.example/x.jpg", False),
        ("file:///etc/passwd", False),
        ("", False),
        ("a\x00b", False),
        ("..\\..\\x.jpg", False),
    ],
)
def test_is_safe_href(href, safe):
    assert is_safe_href(href) is safe


def test_match_media_prefers_web_formats_and_matches_stems():
    names = ["PMC1.1.xml", "gr1.gif", "gr1.jpg", "gr1.tif", "fig3a.tif", "fig3a.png", "pone.0012345.g001.jpg"]
    assert match_media(names, "gr1") == "gr1.jpg"
    assert match_media(names, "gr1.tif") == "gr1.jpg"  # TIFF original named, JPEG served
    assert match_media(names, "fig3a.tif") == "fig3a.png"
    assert match_media(names, "pone.0012345.g001") == "pone.0012345.g001.jpg"  # dots inside the stem
    assert match_media(names, "PMC1.1") is None  # the XML is not an image
    assert match_media(names, "gr2") is None
    assert match_media(["only.tif"], "only") == "only.tif"


def test_ordered_map_keeps_input_order_and_stops_early():
    calls: list[int] = []
    lock = threading.Lock()

    def slow_square(x: int) -> int:
        time.sleep(random.uniform(0, 0.01))
        with lock:
            calls.append(x)
        return x * x

    results = [(item, future.result()) for item, future in ordered_map(slow_square, range(40), workers=4)]
    assert results == [(i, i * i) for i in range(40)]
    calls.clear()
    taken = []
    for _item, future in ordered_map(slow_square, range(1000), workers=4, window=8):
        taken.append(future.result())
        if len(taken) == 5:
            break
    assert taken == [0, 1, 4, 9, 16]
    assert len(calls) <= 5 + 8  # nothing beyond the in-flight window was started


def test_ordered_map_passes_worker_exceptions_to_the_consumer():
    def boom(x: int) -> int:
        if x == 2:
            raise RuntimeError("worker failed")
        return x

    seen = []
    with pytest.raises(RuntimeError, match="worker failed"):
        for _item, future in ordered_map(boom, range(5), workers=2):
            seen.append(future.result())
    assert seen == [0, 1]


def _client() -> HttpClient:
    settings = HttpSettings(read_timeout=1.0, retries=1, backoff_base=0.01, backoff_max=0.02)
    return HttpClient({"bucket": RateLimiter(1000), "ncbi": RateLimiter(1000)}, settings)


def test_bucket_resolver_picks_latest_version_and_lists_when_metadata_has_no_media():
    with FakeServices() as services:
        services.put_bucket_article("PMC7", {"f1.jpg": b"old"}, version=1)
        services.put_bucket_article(
            "PMC7", {"f1.jpg": b"new", "f1.gif": b"thumb"}, version=2, media_urls=False, license_code="CC BY-NC-ND"
        )
        services.put_bucket_article("PMC70", {"zzz.jpg": b"other article with a longer id"})
        resolver = BucketResolver(_client(), f"{services.url}/bucket")
        media = resolver.media("PMC7")
        assert (media.version, media.license) == (2, "CC BY-NC-ND")
        assert media.media_for("f1").url == f"{services.url}/bucket/PMC7.2/f1.jpg"
        assert resolver.media("PMC8") is None  # not in the bucket
        resolver.media("PMC7")
        assert len(services.requests_to("/bucket/metadata/PMC7.2.json")) == 1  # memoized per article
        assert resolver.media_file("s3://pmc-oa-opendata/PMC7.2/a.jpg")[1].url == f"{services.url}/bucket/PMC7.2/a.jpg"


def test_oa_package_is_read_in_memory_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a careless extractall would write here
    jpg = make_image(50, 50, 5, "JPEG")
    with FakeServices() as services:
        services.oa_packages["PMC9"] = make_tgz(
            {"PMC9/f1.jpg": jpg, "PMC9/article.nxml": b"<article/>", "../../escape.jpg": b"x", "/abs.png": b"y"}
        )
        fallback = LegacyPackageRoute(_client(), f"{services.url}/oa/oa.fcgi", f"{services.url}/ftp")
        package = fallback.package("PMC9")
        assert package.url == f"{services.url}/ftp/pub/pmc/oa_package/3f/0c/PMC9.tar.gz"  # oa_service_record.xml
        assert package.images["f1.jpg"] == jpg and "article.nxml" not in package.images
        assert fallback.package("PMC404") is None  # OA service: idIsNotOpenAccess
    assert list(tmp_path.rglob("*")) == [] and not Path(tmp_path.parent / "escape.jpg").exists()
