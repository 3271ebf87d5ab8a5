"""Resumable scrape state in one SQLite file (``OUT/manifest.sqlite``).

Why SQLite and not a JSON-lines journal: each unit of work (an article's
figures, one image) changes several facts at once -- the figure's status, its
file, its content hash, the duplicates it causes -- and a transaction makes
them land together or not at all, even under ``kill -9``. Uniqueness
(figure identity, content hash) is enforced by the database instead of by
in-memory sets rebuilt on every start, and the "next pending figure in order"
query stays cheap at a million rows. It ships with Python.

Only the main thread touches the database (workers return results to it).
Statuses: ``pending`` (to do), ``ok`` / ``fetched`` (done), ``skipped``
(permanent: bad image, duplicate, no body...) and ``failed`` (transient:
timeout, HTTP 5xx; set back to pending by :meth:`Manifest.retry_failed` at the
start of the next run).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from data.captions import count_words

__all__ = ["Manifest", "ManifestError"]

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS articles (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    article_id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL DEFAULT 'pending',
    reason TEXT,
    message TEXT,
    info TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS figures (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    article_id TEXT NOT NULL,
    words INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    reason TEXT,
    message TEXT,
    candidate TEXT NOT NULL,
    image TEXT,
    sha256 TEXT,
    width INTEGER,
    height INTEGER,
    source_url TEXT,
    duplicate_of TEXT
);
CREATE INDEX IF NOT EXISTS figures_by_status ON figures (status, seq);
CREATE UNIQUE INDEX IF NOT EXISTS figures_by_content ON figures (sha256) WHERE status = 'ok';
CREATE INDEX IF NOT EXISTS articles_by_status ON articles (status, seq);
CREATE TABLE IF NOT EXISTS counters (
    step TEXT NOT NULL, reason TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (step, reason)
);
"""


class ManifestError(RuntimeError):
    """The manifest belongs to another job or another schema."""


class Manifest:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None)
            # WAL + NORMAL: a killed process never loses a committed transaction; only
            # a power cut can drop the last few, which a rerun simply redoes.
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)  # idempotent: CREATE ... IF NOT EXISTS
        except sqlite3.DatabaseError as exc:
            raise ManifestError(f"{self.path}: not a usable scrape manifest ({exc})") from None
        version = self.get_meta("schema_version")
        if version is None:
            self.set_meta("schema_version", SCHEMA_VERSION)
        elif version != SCHEMA_VERSION:
            raise ManifestError(f"{self.path}: manifest schema {version}, this scraper writes {SCHEMA_VERSION}")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Manifest":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- transactions ----------------------------------------------------------------------
    class _Tx:
        def __init__(self, db: sqlite3.Connection):
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type: Any, *rest: Any) -> None:
            self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")

    def transaction(self) -> "_Tx":
        return Manifest._Tx(self.db)

    # -- meta --------------------------------------------------------------------------------
    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_meta(self, key: str, value: Any, db: sqlite3.Connection | None = None) -> None:
        (db or self.db).execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, json.dumps(value, sort_keys=True)),
        )

    # -- counters (events without a row of their own: duplicates, bad pages) ----------------
    @staticmethod
    def bump(db: sqlite3.Connection, step: str, reason: str, n: int = 1) -> None:
        if n:
            db.execute(
                "INSERT INTO counters (step, reason, n) VALUES (?, ?, ?) "
                "ON CONFLICT(step, reason) DO UPDATE SET n = n + excluded.n",
                (step, reason, n),
            )

    def counters(self, step: str) -> dict[str, int]:
        rows = self.db.execute("SELECT reason, n FROM counters WHERE step = ? ORDER BY reason", (step,))
        return {reason: n for reason, n in rows}

    # -- articles ----------------------------------------------------------------------------
    def add_articles(
        self,
        articles: Iterable[tuple[str, dict[str, Any]]],
        *,
        extra_meta: dict[str, Any] | None = None,
        counts: dict[str, int] | None = None,
    ) -> int:
        """Insert articles (id, info) in order; repeats are counted, not inserted. Returns new ones.

        ``extra_meta`` (the search position) and ``counts`` (search counters) land in the same transaction.
        """
        added = 0
        with self.transaction() as db:
            for counter, n in (counts or {}).items():
                self.bump(db, "search", counter, n)
            for article_id, info in articles:
                cursor = db.execute(
                    "INSERT INTO articles (article_id, info) VALUES (?, ?) ON CONFLICT(article_id) DO NOTHING",
                    (article_id, json.dumps(info, sort_keys=True)),
                )
                if cursor.rowcount:
                    added += 1
                else:
                    self.bump(db, "search", "duplicate_article")
            for key, value in (extra_meta or {}).items():
                self.set_meta(key, value, db)
        return added

    def pending_articles(self, limit: int) -> list[tuple[str, dict[str, Any]]]:
        rows = self.db.execute(
            "SELECT article_id, info FROM articles WHERE status = 'pending' ORDER BY seq LIMIT ?", (limit,)
        )
        return [(article_id, json.loads(info)) for article_id, info in rows]

    def count_pending_articles(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM articles WHERE status = 'pending'").fetchone()[0]

    def finish_article(
        self,
        article_id: str,
        status: str,
        *,
        reason: str | None = None,
        message: str | None = None,
        candidates: Iterable[dict[str, Any]] = (),
        counts: dict[str, int] | None = None,
    ) -> int:
        """Record an article's outcome and its candidate figures in one transaction."""
        with self.transaction() as db:
            added = self._insert_candidates(db, candidates, "fetch")
            for counter, n in (counts or {}).items():
                self.bump(db, "fetch", counter, n)
            db.execute(
                "UPDATE articles SET status = ?, reason = ?, message = ? WHERE article_id = ?",
                (status, reason, message, article_id),
            )
        return added

    # -- figures -----------------------------------------------------------------------------
    def _insert_candidates(self, db: sqlite3.Connection, candidates: Iterable[dict[str, Any]], step: str) -> int:
        added = 0
        for candidate in candidates:
            cursor = db.execute(
                "INSERT INTO figures (key, article_id, words, candidate) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(key) DO NOTHING",
                (
                    candidate["key"],
                    candidate["article_id"],
                    count_words(candidate.get("caption") or ""),
                    json.dumps(candidate, sort_keys=True, ensure_ascii=False),
                ),
            )
            if cursor.rowcount:
                added += 1
            else:
                self.bump(db, step, "duplicate_figure")
        return added

    def add_candidates(
        self,
        candidates: Iterable[dict[str, Any]],
        *,
        step: str,
        counts: dict[str, int] | None = None,
        extra_meta: dict[str, Any] | None = None,
    ) -> int:
        """Insert candidate figures directly (Open-i search results) plus page-level counts."""
        with self.transaction() as db:
            added = self._insert_candidates(db, candidates, step)
            for counter, n in (counts or {}).items():
                self.bump(db, step, counter, n)
            for key, value in (extra_meta or {}).items():
                self.set_meta(key, value, db)
        return added

    def pending_figures(
        self, min_words: int, after_seq: int = 0, limit: int = 1000
    ) -> list[tuple[int, dict[str, Any]]]:
        rows = self.db.execute(
            "SELECT seq, candidate FROM figures WHERE status = 'pending' AND words >= ? AND seq > ? "
            "ORDER BY seq LIMIT ?",
            (min_words, after_seq, limit),
        )
        return [(seq, json.loads(candidate)) for seq, candidate in rows]

    def iter_pending_figures(self, min_words: int) -> Iterator[tuple[int, dict[str, Any]]]:
        """Pending figures in order, read in chunks (safe while rows are being updated)."""
        last = 0
        while True:
            chunk = self.pending_figures(min_words, last)
            if not chunk:
                return
            yield from chunk
            last = chunk[-1][0]

    def count_pending_figures(self, min_words: int) -> int:
        return self.db.execute(
            "SELECT COUNT(*) FROM figures WHERE status = 'pending' AND words >= ?", (min_words,)
        ).fetchone()[0]

    def count_short_captions(self, min_words: int) -> int:
        return self.db.execute(
            "SELECT COUNT(*) FROM figures WHERE status = 'pending' AND words < ?", (min_words,)
        ).fetchone()[0]

    def count_ok(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM figures WHERE status = 'ok'").fetchone()[0]

    def content_owner(self, sha256: str) -> str | None:
        row = self.db.execute("SELECT key FROM figures WHERE status = 'ok' AND sha256 = ?", (sha256,)).fetchone()
        return None if row is None else row[0]

    def figure_ok(
        self,
        key: str,
        *,
        image: str,
        sha256: str,
        width: int,
        height: int,
        source_url: str,
        updates: dict[str, Any] | None = None,
    ) -> None:
        """Mark a figure downloaded; ``updates`` (e.g. the bucket's licence) merge into its metadata."""
        with self.transaction() as db:
            if updates:
                row = db.execute("SELECT candidate FROM figures WHERE key = ?", (key,)).fetchone()
                candidate = {**json.loads(row[0]), **updates}
                db.execute(
                    "UPDATE figures SET candidate = ? WHERE key = ?",
                    (json.dumps(candidate, sort_keys=True, ensure_ascii=False), key),
                )
            db.execute(
                "UPDATE figures SET status = 'ok', reason = NULL, message = NULL, image = ?, sha256 = ?, "
                "width = ?, height = ?, source_url = ? WHERE key = ?",
                (image, sha256, width, height, source_url, key),
            )

    def figure_not_ok(
        self,
        key: str,
        status: str,
        reason: str,
        message: str = "",
        *,
        duplicate_of: str | None = None,
        source_url: str | None = None,
    ) -> None:
        if status not in ("skipped", "failed"):
            raise ValueError(f"figure status must be skipped or failed, got {status!r}")
        with self.transaction() as db:
            db.execute(
                "UPDATE figures SET status = ?, reason = ?, message = ?, duplicate_of = ?, source_url = ? "
                "WHERE key = ?",
                (status, reason, message[:1000], duplicate_of, source_url, key),
            )

    def retry_failed(self) -> int:
        """Transient failures of earlier runs become pending again."""
        with self.transaction() as db:
            n = db.execute(
                "UPDATE figures SET status = 'pending', reason = NULL, message = NULL WHERE status = 'failed'"
            ).rowcount
            n += db.execute(
                "UPDATE articles SET status = 'pending', reason = NULL, message = NULL WHERE status = 'failed'"
            ).rowcount
        return n

    def ok_figures(self) -> list[dict[str, Any]]:
        """Downloaded figures in candidate order, with their file and checks."""
        rows = self.db.execute(
            "SELECT candidate, image, sha256, width, height, source_url FROM figures WHERE status = 'ok' ORDER BY seq"
        )
        result = []
        for candidate, image, sha256, width, height, source_url in rows:
            record = json.loads(candidate)
            record.update(image=image, sha256=sha256, width=width, height=height, source_url=source_url)
            result.append(record)
        return result

    def ok_images(self) -> set[str]:
        return {row[0] for row in self.db.execute("SELECT image FROM figures WHERE status = 'ok'")}

    # -- summaries ---------------------------------------------------------------------------
    def status_counts(self, table: str) -> dict[str, dict[str, int]]:
        """{status: {reason or "": n}} for ``articles`` or ``figures``."""
        if table not in ("articles", "figures"):
            raise ValueError(table)
        result: dict[str, dict[str, int]] = {}
        for status, reason, n in self.db.execute(
            f"SELECT status, COALESCE(reason, ''), COUNT(*) FROM {table} "
            "GROUP BY status, reason ORDER BY status, reason"
        ):
            result.setdefault(status, {})[reason] = n
        return result

    def ok_by_route(self) -> dict[str, dict[str, int]]:
        """{route: {"articles": n, "figures": m}} of the downloaded figures (the route is in the candidate JSON)."""
        rows = self.db.execute(
            "SELECT COALESCE(json_extract(candidate, '$.route'), ''), COUNT(DISTINCT article_id), COUNT(*) "
            "FROM figures WHERE status = 'ok' GROUP BY 1 ORDER BY 1"
        )
        return {route or "unrecorded": {"articles": a, "figures": f} for route, a, f in rows}

    def articles_skipped_for(self, reasons: Iterable[str]) -> dict[str, int]:
        """Articles (not figures) whose figures were skipped for article-level ``reasons`` (e.g. retracted)."""
        wanted = list(reasons)
        marks = ", ".join("?" for _ in wanted)
        rows = self.db.execute(
            f"SELECT reason, COUNT(DISTINCT article_id) FROM figures WHERE status = 'skipped' AND reason IN ({marks}) "
            "GROUP BY reason ORDER BY reason",
            wanted,
        )
        return dict(rows.fetchall())

    def count(self, table: str) -> int:
        if table not in ("articles", "figures"):
            raise ValueError(table)
        return self.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
