"""Read a JSON file with errors that name the file and the position: one reader for every loader.

Annotation lists, the med config, scraped record lists and the split step's input all come from users'
files, so a bad one must say where it is bad (``path:line:column: malformed JSON: ...``), never
show a traceback from deep inside ``json``. Callers choose the exception classes their CLIs catch
and check the parsed value's shape themselves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["read_json_file"]


def read_json_file(
    path: str | Path,
    *,
    what: str = "JSON file",
    error: type[Exception] = ValueError,
    missing: type[Exception] = FileNotFoundError,
) -> Any:
    """The parsed content of ``path``; ``missing`` if it does not exist, ``error`` if it is not JSON text.

    ``what`` names the file in messages (``"annotation file"``, ``"med config file"``).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise missing(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, not the {what}") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text ({exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{path}:{exc.lineno}:{exc.colno}: malformed JSON: {exc.msg}") from None
