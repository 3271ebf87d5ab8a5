"""The one resolver for "a local file or folder, or a Hugging Face hub name".

Configs name the tokenizer, the BERT weights (``text_encoder``), the timm ViT
weights (``vit_init``) and the checkpoint to start from (``pretrained``) by a
local path or a hub name. Left to the libraries, a hub name without network
costs about 50 s and ten "Retrying" lines before the error, and a relative path
that does not exist from the current folder is sent to the hub as a repo id
("Repo id must be in the form 'repo_name' ..."). :func:`resolve_source` decides
once, in this order:

1. an existing path (``~`` expanded) is used as it is;
2. text that cannot be a hub repo id (``data/x/tokenizer``, ``./tok``, ``/abs/tok``)
   is a missing path: the error names the folder it was looked for in;
3. a hub name: when the hub is switched off (``HF_HUB_OFFLINE=1``) or does not
   answer one probe (``HEAD`` of ``HF_ENDPOINT``, :data:`PROBE_TIMEOUT_S`, no
   retries), the local hub cache is used when it holds the repo, else the error
   says "not a local folder and the hub is unreachable: ...". When the hub
   answers, the name is returned and the library downloads as usual.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence

from utils.errors import SourceError

__all__ = ["PROBE_TIMEOUT_S", "SourceError", "resolve_source", "source_file", "hub_unreachable"]

PROBE_TIMEOUT_S = 5.0
_probe_results: dict[str, str | None] = {}


def _is_repo_id(text: str) -> bool:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def hub_unreachable() -> str | None:
    """Why the hub cannot be used now (``None``: it answered). One probe per endpoint and process."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return "HF_HUB_OFFLINE=1 is set"
    endpoint = constants.ENDPOINT
    if endpoint not in _probe_results:
        _probe_results[endpoint] = _probe(endpoint)
    return _probe_results[endpoint]


def _probe(endpoint: str) -> str | None:
    """One HEAD request through huggingface_hub's own client (its proxies, certificates); any answer counts."""
    from huggingface_hub.utils import get_session

    outcome: list[str | None] = []

    def request() -> None:
        try:
            get_session().head(endpoint, timeout=PROBE_TIMEOUT_S)
            outcome.append(None)
        except Exception as exc:  # httpx raises many connection error types
            outcome.append(f"{endpoint} did not answer ({type(exc).__name__}: {str(exc)[:200]})")

    # A thread bounds the whole probe: name resolution is not covered by the client's timeout.
    worker = threading.Thread(target=request, daemon=True)
    worker.start()
    worker.join(PROBE_TIMEOUT_S + 1.0)
    return outcome[0] if outcome else f"{endpoint} did not answer within {PROBE_TIMEOUT_S + 1.0:.0f} s"


def _cached_snapshot(repo_id: str) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not in the cache (LocalEntryNotFoundError and relatives)
        return None


def resolve_source(name: str | Path, *, what: str, error: type[Exception] = SourceError,
                   written: str | None = None) -> Path | str:
    """A local ``Path`` (given, or the hub cache's copy) or the hub repo id to download from.

    ``what`` names the config key in messages (``"tokenizer"``, ``"text_encoder"`` ...),
    ``written`` what the user wrote when it differs from ``name`` (a timm name for its hub
    repo); failures raise ``error`` (a ``ValueError`` subclass of the caller's module).
    """
    text = str(name)
    shown = written if written is not None else text
    if not text.strip():
        raise error(f"{what} is empty: give a local folder or a hub name")
    path = Path(text).expanduser()
    if path.exists():
        return path
    missing = "no such file or folder" + ("" if path.is_absolute() else f" relative to the current folder {Path.cwd()}")
    if not _is_repo_id(text):
        raise error(f"{what} {shown!r} not found: {missing}, and not a hub name")
    reason = hub_unreachable()
    if reason is None:
        return text
    cached = _cached_snapshot(text)
    if cached is not None:
        return cached
    raise error(
        f"{what} {shown!r}: not a local folder ({missing}) and the hub is unreachable: {reason}, "
        f"and the hub cache holds no copy. Use a local folder (download it where there is network, e.g. "
        f"`hf download {text} --local-dir DIR`, then set {what}: DIR) or fill the cache and set HF_HUB_OFFLINE=1."
    )


def source_file(source: Path | str, filenames: Sequence[str], *, what: str,
                error: type[Exception] = SourceError) -> Path:
    """The first of ``filenames`` in a folder from :func:`resolve_source`, or downloaded from its hub repo."""
    if isinstance(source, Path):
        folder = source if source.is_dir() else source.parent
        for filename in filenames:
            if (folder / filename).exists():
                return folder / filename
        raise error(f"{what}: no {' or '.join(filenames)} in {folder}")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    for filename in filenames:
        try:
            return Path(hf_hub_download(source, filename))
        except EntryNotFoundError:
            continue
        except Exception as exc:  # unknown repo, gated, connection lost ...: name the source
            raise error(f"{what} {source!r}: cannot download {filename} from the hub ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200]})") from None
    raise error(f"{what} {source!r}: no {' or '.join(filenames)} in this hub repo")
