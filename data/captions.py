"""Caption text cleaning: the one place that turns scraped markup into plain text.

Two layers, used by different stages:

* :func:`clean_caption_text` keeps case and punctuation (the scraper and the
  subfigure splitter need "(A)" and "B." intact) and only removes HTML/JATS
  markup, entities and whitespace noise.
* :func:`pre_caption` is BLIP's training-time normalisation (lowercase, the
  characters ``. ! " ( ) * # : ; ~`` replaced by spaces, ``max_words`` cut),
  applied on top of :func:`clean_caption_text` so Open-i captions that carry
  ``<b>...</b>`` or ``&amp;`` are clean too.
"""

from __future__ import annotations

import html
import re

__all__ = ["clean_caption_text", "pre_caption", "count_words"]

# A real tag starts with a letter (or "/" + letter); "<5 mm" or "a < b" are text.
_TAG = re.compile(r"</?([A-Za-z][A-Za-z0-9:_-]*)(?:\s[^<>]*)?/?>")
# Tags that separate words when removed; inline ones (b, i, sup, sub, ...) glue.
_BLOCK_TAGS = frozenset(
    "br p div li ul ol tr td th table caption title label hr h1 h2 h3 h4 h5 h6 "
    "list list-item fig-group fig sec tbody thead".split()
)
_WHITESPACE = re.compile(r"\s+")
_BLIP_PUNCT = re.compile(r"([.!\"()*#:;~])")
# Zero-width and BOM characters that survive unescaping and break tokenisation.
_INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad]")


def _drop_tags(text: str) -> str:
    def repl(match: re.Match[str]) -> str:
        return " " if match.group(1).lower() in _BLOCK_TAGS else ""

    return _TAG.sub(repl, text)


def clean_caption_text(text: str | None) -> str:
    """Strip markup and entities, keep case and punctuation, collapse whitespace.

    Tags are removed before and after unescaping so doubly escaped markup
    (``&lt;b&gt;A&lt;/b&gt;``, common in Open-i JSON) is removed as well.
    ``None`` gives ``""``.
    """
    if not text:
        return ""
    text = _drop_tags(text)
    text = html.unescape(text)
    text = _drop_tags(text)
    text = _INVISIBLE.sub("", text)
    text = text.replace("\u00a0", " ")
    return _WHITESPACE.sub(" ", text).strip()


def pre_caption(caption: str | None, max_words: int = 50) -> str:
    """BLIP's ``pre_caption`` on markup-free text.

    Differences from BLIP, both deliberate: HTML/entities are removed first and
    every whitespace run (tabs and single newlines too) collapses to one space.
    """
    caption = clean_caption_text(caption).lower()
    caption = _BLIP_PUNCT.sub(" ", caption)
    caption = _WHITESPACE.sub(" ", caption).strip()
    if max_words > 0:
        words = caption.split(" ")
        if len(words) > max_words:
            caption = " ".join(words[:max_words])
    return caption


def count_words(text: str) -> int:
    """Number of whitespace-separated words (used by ``--min_words`` filters)."""
    return len(text.split())
