"""One polite HTTP client for every remote service the scraper talks to.

Why one client: NCBI counts requests per second per IP (3/s, 10/s with an API
key), so every thread that talks to a host must draw from the same limiter.
Each service (E-utilities, Open-i, the PMC cloud bucket) gets its own
:class:`RateLimiter`; all threads share it.

Retries: connection errors, timeouts, truncated bodies and HTTP 500/502/504
are retried with exponential backoff plus jitter. HTTP 429 and 503 are
*refusals*: the client waits what ``Retry-After`` asks (all threads pause, not
only the one that was refused) and, after ``max_refusals`` refusals in a row
without a success in between, raises :class:`RefusedError` so the run stops
cleanly instead of hammering a server that said no. Everything written so far
stays valid and a rerun resumes.
"""

from __future__ import annotations

import email.utils
import json
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

__all__ = [
    "FetchError",
    "HttpClient",
    "HttpSettings",
    "InvalidResponse",
    "QueryError",
    "RateLimiter",
    "RefusedError",
    "Response",
    "parse_retry_after",
    "redact",
]

RETRYABLE_STATUS = frozenset({500, 502, 504})
DEFAULT_HEADROOM = 0.03
REFUSAL_STATUS = frozenset({429, 503})


_SECRET_PARAMS = re.compile(r"((?:api_key|email)=)[^&\s'\"]+")


def redact(text: str) -> str:
    """Hide the API key and e-mail in URLs that end up in messages, reports and the manifest."""
    return _SECRET_PARAMS.sub(r"\1***", text)


class FetchError(Exception):
    """A request that failed for good (after retries). ``reason`` is a skip-counter key."""

    def __init__(self, reason: str, message: str):
        super().__init__(redact(message))
        self.reason = reason


class QueryError(RuntimeError):
    """The service answered that the request itself is wrong (a bad query or filter): retrying cannot help."""


class InvalidResponse(ValueError):
    """A ``validate`` callback's verdict on a 2xx body, with the skip reason to report if every retry fails."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class RefusedError(Exception):
    """The server refused too often (429/503): the whole run must stop, politely."""

    def __init__(self, message: str):
        super().__init__(redact(message))


class RateLimiter:
    """Token bucket shared by threads: at most ``rate`` requests/s, ``burst`` at once.

    Implemented as a virtual schedule (GCRA): each caller reserves the next
    free slot under a lock and sleeps outside it, so waiting threads are served
    in arrival order and the long-run rate is ``rate / (1 + headroom)`` when
    saturated. The default 3 % headroom is for "N requests per second" rules
    counted by the server: with slots exactly 1/N s apart, a little network
    jitter puts N + 1 arrivals into one second; 1.03/N s apart it takes 30 ms.
    :meth:`pause_until` pushes every future slot past a server-requested wait.
    """

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        headroom: float = DEFAULT_HEADROOM,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if rate <= 0:
            raise ValueError(f"rate must be > 0 requests/s, got {rate}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        if headroom < 0:
            raise ValueError(f"headroom must be >= 0, got {headroom}")
        self.rate = float(rate)
        self.burst = int(burst)
        self._interval = (1.0 + headroom) / self.rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tat = -float("inf")  # theoretical arrival time of the next request

    def reserve(self) -> float:
        """Reserve a slot; return the monotonic time at which it may be used."""
        tolerance = (self.burst - 1) * self._interval
        with self._lock:
            now = self._clock()
            allowed_at = max(now, self._tat - tolerance)
            self._tat = max(self._tat, allowed_at) + self._interval
            return allowed_at

    def acquire(self) -> None:
        """Block until this thread may send one request."""
        delay = self.reserve() - self._clock()
        if delay > 0:
            self._sleep(delay)

    def pause_until(self, when: float) -> None:
        """No request (from any thread) before monotonic time ``when``."""
        with self._lock:
            self._tat = max(self._tat, when + (self.burst - 1) * self._interval)

    def __repr__(self) -> str:
        return f"RateLimiter(rate={self.rate}, burst={self.burst})"


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


@dataclass
class HttpSettings:
    """Timeouts and retry policy. Tests shrink the delays; users rarely touch them."""

    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    # Whole-transfer cap: a server that drips one byte per read timeout cannot hold a worker forever.
    total_timeout: float = 300.0
    retries: int = 4
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    # A Retry-After longer than this is treated as "come back much later": stop the run.
    max_retry_after: float = 600.0
    max_refusals: int = 8
    user_agent: str = "MedVLP-scraper/1.0 (+https://github.com/medvlp/medvlp; research figure-caption collection)"


@dataclass
class Response:
    """A fully read response (body already checked against the size cap)."""

    url: str
    status: int
    headers: Mapping[str, str]
    content: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0].strip().lower()

    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The parsed body; ``ValueError("not JSON: ...")`` (a validation failure, retried) if it is not."""
        try:
            return json.loads(self.content)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"not JSON: {exc}") from None


@dataclass
class HttpStats:
    """Counts for the run report: requests sent and retries by cause."""

    requests: int = 0
    retries: dict[str, int] = field(default_factory=dict)
    refusals: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_request(self) -> None:
        with self._lock:
            self.requests += 1

    def count_retry(self, cause: str) -> None:
        with self._lock:
            self.retries[cause] = self.retries.get(cause, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {"requests": self.requests, "retries": dict(sorted(self.retries.items())), "refusals": self.refusals}


class HttpClient:
    """``requests.Session`` + per-service rate limiters + retries + size caps.

    ``limiters`` maps a service name ("ncbi", "openi", "bucket") to its shared
    limiter; every call names its service.
    """

    def __init__(
        self,
        limiters: Mapping[str, RateLimiter],
        settings: HttpSettings | None = None,
        *,
        pool_size: int = 16,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ):
        self.limiters = dict(limiters)
        self.settings = settings or HttpSettings()
        self.stats = HttpStats()
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self._refusal_lock = threading.Lock()
        self._consecutive_refusals = 0
        self.session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = self.settings.user_agent

    def close(self) -> None:
        self.session.close()

    # -- retry policy -----------------------------------------------------------------
    def backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter in [base*2^a / 2, base*2^a], capped."""
        ceiling = min(self.settings.backoff_max, self.settings.backoff_base * (2**attempt))
        with self._rng_lock:
            return ceiling / 2 + self._rng.random() * ceiling / 2

    def _note_success(self) -> None:
        with self._refusal_lock:
            self._consecutive_refusals = 0

    def _note_refusal(self, url: str, status: int) -> None:
        with self._refusal_lock:
            self._consecutive_refusals += 1
            self.stats.refusals += 1
            if self._consecutive_refusals >= self.settings.max_refusals:
                raise RefusedError(
                    f"the server refused {self._consecutive_refusals} requests in a row "
                    f"(last: HTTP {status} for {url}). Everything done so far is saved; rerun the same "
                    f"command later to resume, or lower the request rate."
                )

    # -- core ----------------------------------------------------------------------------
    def fetch(
        self,
        url: str,
        *,
        service: str,
        method: str = "GET",
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        max_bytes: int = 64 * 1024 * 1024,
        validate: Callable[[Response], Any] | None = None,
    ) -> Response:
        """Send one request with retries; return the fully read response.

        Statuses other than 2xx are returned as they are (404 is an answer, not
        an error) except the retryable and refusal ones. ``validate`` is called
        on a 2xx response; if it raises ``ValueError`` the request is retried
        (servers do send truncated JSON now and then) and finally fails with
        reason ``malformed`` (or the ``reason`` of an :class:`InvalidResponse`,
        e.g. ``md5_mismatch``).
        """
        limiter = self.limiters[service]
        last_reason, last_message = "connection_error", "no attempt made"
        attempts = self.settings.retries + 1
        for attempt in range(attempts):
            limiter.acquire()
            self.stats.count_request()
            try:
                response = self._send(method, url, params=params, data=data, max_bytes=max_bytes)
            except FetchError as exc:
                if exc.reason == "too_large":
                    raise
                last_reason, last_message = exc.reason, str(exc)
                if attempt + 1 < attempts:
                    self.stats.count_retry(exc.reason)
                    self._sleep(self.backoff(attempt))
                continue
            status = response.status
            if status in REFUSAL_STATUS:
                self._note_refusal(response.url, status)
                wait = parse_retry_after(response.headers.get("Retry-After"))
                if wait is not None and wait > self.settings.max_retry_after:
                    raise RefusedError(
                        f"{response.url} answered HTTP {status} and asks to wait {wait:.0f} s "
                        f"(more than the {self.settings.max_retry_after:.0f} s we wait). Rerun later to resume."
                    )
                delay = wait if wait is not None else self.backoff(attempt)
                last_reason, last_message = f"http_{status}", f"{response.url}: HTTP {status}"
                if attempt + 1 < attempts:
                    self.stats.count_retry(f"http_{status}")
                    # Everyone waits: a 429 is about this client, not about one thread.
                    limiter.pause_until(time.monotonic() + delay)
                continue
            self._note_success()
            if status in RETRYABLE_STATUS:
                last_reason, last_message = f"http_{status}", f"{response.url}: HTTP {status}"
                if attempt + 1 < attempts:
                    self.stats.count_retry(f"http_{status}")
                    self._sleep(self.backoff(attempt))
                continue
            if validate is not None and 200 <= status < 300:
                try:
                    validate(response)
                except ValueError as exc:
                    last_reason = exc.reason if isinstance(exc, InvalidResponse) else "malformed"
                    last_message = f"{response.url}: {last_reason.replace('_', ' ')} ({exc})"
                    if attempt + 1 < attempts:
                        self.stats.count_retry(last_reason)
                        self._sleep(self.backoff(attempt))
                    continue
            return response
        raise FetchError(last_reason, f"{last_message} (gave up after {attempts} attempts)")

    def _send(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None,
        data: Mapping[str, Any] | None,
        max_bytes: int,
    ) -> Response:
        settings = self.settings
        started = time.monotonic()
        try:
            with self.session.request(
                method,
                url,
                params=params,
                data=data,
                stream=True,
                timeout=(settings.connect_timeout, settings.read_timeout),
                allow_redirects=True,
            ) as raw:
                declared = raw.headers.get("Content-Length")
                if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                    raise FetchError("too_large", f"{raw.url}: {declared} bytes announced, cap is {max_bytes}")
                chunks: list[bytes] = []
                size = 0
                for chunk in raw.iter_content(chunk_size=64 * 1024):
                    size += len(chunk)
                    if size > max_bytes:
                        raise FetchError("too_large", f"{raw.url}: body exceeds the cap of {max_bytes} bytes")
                    if time.monotonic() - started > settings.total_timeout:
                        raise FetchError("timeout", f"{raw.url}: transfer took longer than {settings.total_timeout} s")
                    chunks.append(chunk)
                return Response(
                    url=redact(raw.url), status=raw.status_code, headers=dict(raw.headers), content=b"".join(chunks)
                )
        except FetchError:
            raise
        except requests.exceptions.Timeout as exc:
            raise FetchError("timeout", f"{url}: timed out ({exc.__class__.__name__})") from None
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as exc:
            raise FetchError("incomplete_body", f"{url}: body ended early ({exc.__class__.__name__})") from None
        except requests.exceptions.ConnectionError as exc:
            # urllib3 reports a read timeout inside a streamed body as a ConnectionError.
            reason = "timeout" if "timed out" in str(exc).lower() else "connection_error"
            raise FetchError(reason, f"{url}: {exc.__class__.__name__}: {exc}") from None
        except requests.exceptions.RequestException as exc:
            raise FetchError("request_error", f"{url}: {exc.__class__.__name__}: {exc}") from None
