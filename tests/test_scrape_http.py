"""The shared HTTP client: rate limiting, retries, Retry-After, refusals, caps -- against a local server."""

from __future__ import annotations

import email.utils
import json
import threading
import time

import pytest

from data.scraper.http import FetchError, HttpClient, HttpSettings, RateLimiter, RefusedError, parse_retry_after
from scrape_fakes import FakeServices, Fault


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_spaces_requests_exactly():
    clock = FakeClock()
    limiter = RateLimiter(4.0, headroom=0.0, clock=clock, sleep=lambda s: None)
    assert [limiter.reserve() for _ in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    clock.now = 10.0  # after a long idle period the next request goes at once
    assert limiter.reserve() == 10.0


def test_rate_limiter_burst_and_pause():
    clock = FakeClock()
    limiter = RateLimiter(4.0, burst=3, headroom=0.0, clock=clock, sleep=lambda s: None)
    assert [limiter.reserve() for _ in range(5)] == [0.0, 0.0, 0.0, 0.25, 0.5]
    limiter.pause_until(2.0)
    assert limiter.reserve() == 2.0  # burst tokens do not let anyone jump a server-requested pause
    with pytest.raises(ValueError):
        RateLimiter(0)


def test_default_headroom_keeps_n_plus_one_requests_out_of_any_second():
    limiter = RateLimiter(3.0, clock=FakeClock(), sleep=lambda s: None)
    slots = [limiter.reserve() for _ in range(7)]
    assert all(later - first >= 1.03 - 1e-9 for first, later in zip(slots, slots[3:], strict=False))
    assert slots[-1] == pytest.approx(6 * 1.03 / 3)  # 97 % of the limit when saturated


def test_rate_limiter_shared_by_threads_never_runs_ahead():
    limiter = RateLimiter(50.0)
    done: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(6):
            limiter.acquire()
            with lock:
                done.append(time.monotonic())

    start = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 24 requests at 50/s: the last slot is 23/50 s after the first; sleep never returns early.
    assert len(done) == 24 and max(done) - start >= 23 / 50 - 1e-3


def test_parse_retry_after():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 10, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(10, abs=1)


@pytest.fixture()
def services():
    with FakeServices() as fake:
        fake.bucket_files["x/ok.bin"] = (b"payload", "application/octet-stream")
        yield fake


def _client(**settings) -> HttpClient:
    base = dict(connect_timeout=1.0, read_timeout=0.3, retries=2, backoff_base=0.01, backoff_max=0.02, max_refusals=5)
    base.update(settings)
    return HttpClient({"bucket": RateLimiter(1000)}, HttpSettings(**base))


def test_429_retry_after_is_honoured(services):
    url = f"{services.url}/bucket/x/ok.bin"
    services.fault("/bucket/x/ok.bin", Fault.status_code(429, {"Retry-After": "1"}))
    client = _client()
    response = client.fetch(url, service="bucket")
    assert (response.status, response.content) == (200, b"payload")
    first, second = services.requests_to("/bucket/x/ok.bin")
    assert second.t - first.t >= 0.95  # the server asked for 1 s; the 0.01 s backoff was not used
    assert client.stats.as_dict()["retries"] == {"http_429": 1}


def test_500_then_success_and_user_agent(services):
    services.fault("/bucket/x/ok.bin", Fault.status_code(500), Fault.status_code(502))
    client = _client()
    assert client.fetch(f"{services.url}/bucket/x/ok.bin", service="bucket").content == b"payload"
    assert client.stats.as_dict()["retries"] == {"http_500": 1, "http_502": 1}
    agent = services.requests_to("/bucket/x/ok.bin")[0].headers["User-Agent"]
    assert agent.startswith("MedVLP-scraper/") and "research" in agent


def test_hanging_server_times_out_then_recovers_or_gives_up(services):
    services.fault("/bucket/x/ok.bin", Fault.hang())
    client = _client()
    assert client.fetch(f"{services.url}/bucket/x/ok.bin", service="bucket").status == 200
    services.sticky["/bucket/x/ok.bin"] = Fault.hang()
    with pytest.raises(FetchError) as info:
        client.fetch(f"{services.url}/bucket/x/ok.bin", service="bucket")
    assert info.value.reason == "timeout"


def test_broken_transfer_is_retried(services):
    services.fault("/bucket/x/ok.bin", Fault.cut_short(3))
    client = _client()
    assert client.fetch(f"{services.url}/bucket/x/ok.bin", service="bucket").content == b"payload"
    assert client.stats.as_dict()["retries"] == {"incomplete_body": 1}


def test_repeated_refusals_stop_the_run(services):
    services.sticky["/bucket/x/ok.bin"] = Fault.status_code(429, {"Retry-After": "0"})
    client = _client(max_refusals=3, retries=5)
    with pytest.raises(RefusedError, match="refused 3 requests in a row"):
        client.fetch(f"{services.url}/bucket/x/ok.bin", service="bucket")
    assert len(services.requests_to("/bucket/x/ok.bin")) == 3


def test_refusal_count_resets_after_a_success(services):
    path = "/bucket/x/ok.bin"
    client = _client(max_refusals=3)
    for _ in range(3):  # 2 refusals then a success, three times: never 3 in a row
        services.fault(path, Fault.status_code(503, {"Retry-After": "0"}), Fault.status_code(429, {"Retry-After": "0"}))
        assert client.fetch(f"{services.url}{path}", service="bucket").status == 200


def test_too_long_retry_after_stops_at_once(services):
    services.fault("/bucket/x/ok.bin", Fault.status_code(503, {"Retry-After": "86400"}))
    with pytest.raises(RefusedError, match="asks to wait 86400 s"):
        _client(max_retry_after=60).fetch(f"{services.url}/bucket/x/ok.bin", service="bucket")


def test_size_cap_is_not_retried(services):
    services.bucket_files["x/big.bin"] = (b"z" * 5000, "application/octet-stream")
    with pytest.raises(FetchError) as info:
        _client().fetch(f"{services.url}/bucket/x/big.bin", service="bucket", max_bytes=1000)
    assert info.value.reason == "too_large"
    assert len(services.requests_to("/bucket/x/big.bin")) == 1


def test_malformed_body_is_retried_then_reported(services):
    def must_be_json(response):
        json.loads(response.content)  # JSONDecodeError is a ValueError

    services.bucket_files["x/doc.json"] = (b'{"ok": 1}', "application/json")
    services.fault("/bucket/x/doc.json", Fault.body_of(b"{trunc", "application/json"))
    services.fault("/bucket/x/doc.json", Fault.body_of(b"<html>", "text/html"))
    client = _client()
    # first try garbage -> retried (validate) -> still garbage -> third try fine
    assert (
        client.fetch(f"{services.url}/bucket/x/doc.json", service="bucket", validate=must_be_json).content
        == b'{"ok": 1}'
    )
    services.sticky["/bucket/x/doc.json"] = Fault.body_of(b"<html>", "text/html")
    with pytest.raises(FetchError) as info:
        client.fetch(f"{services.url}/bucket/x/doc.json", service="bucket", validate=must_be_json)
    assert info.value.reason == "malformed"


def test_api_key_and_email_never_reach_messages(services):
    services.sticky["/bucket/x/ok.bin"] = Fault.status_code(500)
    params = {"api_key": "SECRETKEY123", "email": "me@lab.org", "db": "pmc"}
    with pytest.raises(FetchError) as info:
        _client().fetch(f"{services.url}/bucket/x/ok.bin", service="bucket", params=params)
    assert "SECRETKEY123" not in str(info.value) and "lab.org" not in str(info.value)
    assert "api_key=***" in str(info.value) and "db=pmc" in str(info.value)
    services.sticky.clear()
    response = _client().fetch(f"{services.url}/bucket/x/ok.bin", service="bucket", params=params)
    assert "SECRETKEY123" not in response.url


def test_404_is_an_answer_not_an_error(services):
    response = _client().fetch(f"{services.url}/bucket/x/missing", service="bucket")
    assert response.status == 404
    assert len(services.requests_to("/bucket/x/missing")) == 1


def test_limiter_shared_across_threads_against_the_server(services):
    client = HttpClient({"bucket": RateLimiter(25.0)}, HttpSettings(read_timeout=2.0))
    url = f"{services.url}/bucket/x/ok.bin"

    def worker() -> None:
        for _ in range(4):
            client.fetch(url, service="bucket")

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    times = sorted(r.t for r in services.requests_to("/bucket/x/ok.bin"))
    assert len(times) == 16
    assert times[-1] - times[0] >= 15 / 25 - 0.03  # never faster than the limit (small arrival jitter allowed)
