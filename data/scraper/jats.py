"""JATS XML (PMC articles) -> article metadata and figures with captions.

What a figure is, in PMC XML:

* ``<fig>`` anywhere in the article: ``<body>``, ``<back>``, ``<app>``, the
  ``<floats-group>`` some publishers put after the back matter, sub-articles;
* ``<fig-group>`` holding several ``<fig>`` (each its own image) under a group
  label and caption; a group caption is prepended to each member's caption so
  the image is not left with a bare "(A)"; a group with its own ``<graphic>``
  is a figure too;
* captions: an optional ``<title>`` and any number of ``<p>``; panel
  sub-captions often come as ``<list>`` / ``<list-item>`` (with ``<label>`` or
  only a ``list-type`` such as ``alpha-upper``): they are rendered inline as
  "(A) text (B) text" so the subfigure splitter can find them, and also kept
  as a structured ``subcaptions`` list;
* the image: ``<graphic xlink:href>``, possibly inside ``<alternatives>``
  (several encodings of one image: the first is used). The href is usually a
  bare file stem ("pone.0012345.g001"), matched later against the media files.

Articles whose XML has no ``<body>`` are not open access: NCBI answers HTTP
200 with the front matter only. :func:`article_meta` reports ``has_body``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from lxml import etree

from data.captions import clean_caption_text
from data.scraper.licenses import normalize_license

__all__ = [
    "ArticleMeta",
    "Figure",
    "JatsError",
    "article_figures",
    "article_meta",
    "iter_articles",
    "parse_xml",
    "efetch_error",
]

XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
# Elements whose boundaries separate words; everything else (italic, sup, xref...) glues.
_BLOCK = frozenset(
    "p title label list list-item caption sec def-list def-item term def disp-quote "
    "table-wrap table tr td th break boxed-text".split()
)
_SKIP = frozenset({"graphic", "media", "alternatives", "object-id", "fig", "fig-group"})
_TERMINAL = (".", "!", "?", ":", ";")
_NAMES_CC = re.compile(r"creative\s*commons|\bcc[\s-]?(?:by|0|zero)\b", re.IGNORECASE)
_ROMAN = ["i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x", "xi", "xii", "xiii", "xiv", "xv"]


class JatsError(ValueError):
    """The XML cannot be parsed as an article (names the source)."""


@dataclass
class ArticleMeta:
    pmcid: str = ""
    pmid: str = ""
    doi: str = ""
    title: str = ""
    journal: str = ""
    year: str = ""
    license: str = "unknown"
    license_url: str = ""
    has_body: bool = False
    version: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Figure:
    figure_id: str
    label: str
    caption: str
    graphic: str
    index: int
    subcaptions: list[dict[str, str]] = field(default_factory=list)
    group_id: str = ""
    group_label: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _local(el: Any) -> str:
    tag = el.tag
    if not isinstance(tag, str):
        return ""  # comment or processing instruction
    return etree.QName(tag).localname


def parse_xml(data: bytes, source: str) -> etree._Element:
    """Parse untrusted XML: no network, no DTD loading, no entity expansion."""
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False, remove_comments=False
    )
    try:
        root = etree.fromstring(data, parser=parser)
    except etree.XMLSyntaxError as exc:
        raise JatsError(f"{source}: malformed XML ({exc})") from None
    if root is None:
        raise JatsError(f"{source}: empty XML document")
    return root


def iter_articles(root: etree._Element) -> list[etree._Element]:
    """The ``<article>`` elements of a single article or a ``<pmc-articleset>``."""
    if _local(root) == "article":
        return [root]
    return [child for child in root if _local(child) == "article"]


def efetch_error(root: etree._Element) -> str:
    """The error text of an efetch error document (``<ERROR>`` / ``<error>``), or ""."""
    for el in root.iter():
        if _local(el).lower() == "error":
            return " ".join("".join(el.itertext()).split())
    return ""


def _first(parent: etree._Element | None, *path: str) -> etree._Element | None:
    """First descendant reached by following local names (namespace-agnostic)."""
    current = parent
    for name in path:
        if current is None:
            return None
        current = next((c for c in current if _local(c) == name), None)
    return current


def _text(el: etree._Element | None) -> str:
    """Clean text of an element: inline markup glues (T<sub>2</sub> -> T2), blocks separate."""
    if el is None:
        return ""
    out: list[str] = []
    _render(el, out, None)
    return clean_caption_text("".join(out))


def article_meta(article: etree._Element) -> ArticleMeta:
    """Identifiers, title, journal, year, licence and whether a body exists."""
    meta = ArticleMeta()
    front = _first(article, "front")
    art_meta = _first(front, "article-meta")
    if art_meta is not None:
        for el in art_meta:
            if _local(el) != "article-id":
                continue
            kind = (el.get("pub-id-type") or "").lower()
            value = (el.text or "").strip()
            if kind in ("pmc", "pmcid") and value:
                meta.pmcid = value if value.upper().startswith("PMC") else f"PMC{value}"
                meta.pmcid = "PMC" + meta.pmcid[3:]
            elif kind == "pmcid-ver" and value:
                meta.version = value.rsplit(".", 1)[-1] if "." in value else ""
            elif kind == "pmid":
                meta.pmid = value
            elif kind == "doi":
                meta.doi = value
        meta.title = _text(_first(art_meta, "title-group", "article-title"))
        meta.year = _pub_year(art_meta)
        meta.license, meta.license_url = _license(art_meta)
    journal_meta = _first(front, "journal-meta")
    meta.journal = _text(_first(journal_meta, "journal-title-group", "journal-title")) or _text(
        _first(journal_meta, "journal-title")
    )
    meta.has_body = any(_local(child) == "body" for child in article)
    return meta


def _pub_year(art_meta: etree._Element) -> str:
    years = []
    for el in art_meta:
        if _local(el) == "pub-date":
            year = _first(el, "year")
            if year is not None and (year.text or "").strip().isdigit():
                years.append((el.get("pub-type") or el.get("date-type") or "", year.text.strip()))
    for preferred in ("epub", "pub", "ppub", "collection"):
        for kind, year in years:
            if kind == preferred:
                return year
    return years[0][1] if years else ""


def _license(art_meta: etree._Element) -> tuple[str, str]:
    """(code, URL) from ``<license>`` (link, type, ``<license-p>`` text), else from the copyright statement.

    Older JATS / NLM 2.x files often state the licence only in words, e.g. a
    2007 PLoS ONE ``<copyright-statement>`` (directly in ``<article-meta>``, no
    ``<permissions>``): "... distributed under the terms of the Creative
    Commons Attribution License ...". A statement is read only when it names a
    Creative Commons licence: "(c) 2020 The Authors" leaves the code "unknown"
    (or "other" when a ``<license>`` element exists).
    """
    permissions = _first(art_meta, "permissions")
    holders = [art_meta] + ([permissions] if permissions is not None else [])
    first_url, has_license = "", False
    for lic in permissions if permissions is not None else ():
        if _local(lic) != "license":
            continue
        url = lic.get(XLINK_HREF) or ""
        for el in lic.iter():
            if _local(el) == "license_ref" and (el.text or "").strip():
                url = url or el.text.strip()
        for candidate in (url, lic.get("license-type"), _text(lic)):
            code = normalize_license(candidate)
            if code not in ("unknown", "other"):
                return code, url
        has_license, first_url = True, first_url or url
    for holder in holders:
        for el in holder:
            if _local(el) == "copyright-statement" and _NAMES_CC.search(_text(el)):
                code = normalize_license(_text(el))
                if code not in ("unknown", "other"):
                    return code, first_url
    return ("other" if has_license else "unknown"), first_url


# -- caption text -------------------------------------------------------------------------------
def _generated_label(list_type: str, position: int) -> str:
    if list_type == "alpha-lower":
        return chr(ord("a") + position) if position < 26 else ""
    if list_type == "alpha-upper":
        return chr(ord("A") + position) if position < 26 else ""
    if list_type == "order":
        return str(position + 1)
    if list_type == "roman-lower":
        return _ROMAN[position] if position < len(_ROMAN) else ""
    if list_type == "roman-upper":
        return _ROMAN[position].upper() if position < len(_ROMAN) else ""
    return ""


def _panel_label(label: str) -> str:
    """Bare panel labels ("A", "b", "2") are written "(A)"; others ("A.", "(b)") stay as they are."""
    return f"({label})" if re.fullmatch(r"[A-Za-z0-9]{1,3}", label) else label


def _render(el: etree._Element, out: list[str], subcaptions: list[dict[str, str]] | None) -> None:
    """Append the text of ``el`` to ``out``; list items become "(A) text"."""
    name = _local(el)
    if name in _SKIP:
        return
    if name == "math":  # MathML: its alttext reads better than the token soup
        alt = el.get("alttext")
        out.append(alt if alt else "".join(el.itertext()))
        return
    if name == "list":
        list_type = el.get("list-type") or ""
        position = 0
        for child in el:
            if _local(child) == "list-item":
                _render_list_item(child, list_type, position, out, subcaptions)
                position += 1
            else:
                _render(child, out, subcaptions)
        return
    block = name in _BLOCK
    if block:
        out.append(" ")
    if el.text and name:
        out.append(el.text)
    for child in el:
        _render(child, out, subcaptions)
        if child.tail:
            out.append(child.tail)
    if block:
        out.append(" ")


def _render_list_item(
    item: etree._Element, list_type: str, position: int, out: list[str], subcaptions: list[dict[str, str]] | None
) -> None:
    label_el = next((c for c in item if _local(c) == "label"), None)
    label = _text(label_el) if label_el is not None else _generated_label(list_type, position)
    body: list[str] = []
    if item.text:
        body.append(item.text)
    for child in item:
        if child is not label_el:
            _render(child, body, None)
        if child.tail:
            body.append(child.tail)
    text = clean_caption_text("".join(body))
    if subcaptions is not None:
        subcaptions.append({"label": label, "text": text})
    out.append(f" {_panel_label(label)} {text} " if label else f" {text} ")


def caption_text(caption: etree._Element | None) -> tuple[str, list[dict[str, str]]]:
    """Plain caption (title + paragraphs) and the panel sub-captions found in lists."""
    if caption is None:
        return "", []
    title = ""
    parts: list[str] = []
    subcaptions: list[dict[str, str]] = []
    for child in caption:
        if _local(child) == "title":
            title = _text(child)
            continue
        chunk: list[str] = []
        _render(child, chunk, subcaptions)
        parts.append("".join(chunk))
    if caption.text and caption.text.strip():
        parts.insert(0, caption.text)
    body = clean_caption_text(" ".join(parts))
    if title and body and not title.endswith(_TERMINAL):
        title += "."
    return clean_caption_text(f"{title} {body}"), subcaptions


# -- figures -------------------------------------------------------------------------------------
def _graphics(el: etree._Element) -> list[str]:
    """Hrefs of the images that belong directly to ``el`` (one per <alternatives>)."""
    hrefs: list[str] = []
    for child in el:
        name = _local(child)
        if name == "graphic" and child.get(XLINK_HREF):
            hrefs.append(child.get(XLINK_HREF).strip())
        elif name == "alternatives":
            first = next((g for g in child if _local(g) == "graphic" and g.get(XLINK_HREF)), None)
            if first is not None:
                hrefs.append(first.get(XLINK_HREF).strip())
    return hrefs


def _label(el: etree._Element) -> str:
    return _text(next((c for c in el if _local(c) == "label"), None))


def _caption(el: etree._Element) -> tuple[str, list[dict[str, str]]]:
    return caption_text(next((c for c in el if _local(c) == "caption"), None))


def _iter_figure_elements(article: etree._Element) -> Iterator[etree._Element]:
    for el in article.iter():
        if _local(el) in ("fig", "fig-group"):
            yield el


def article_figures(article: etree._Element) -> list[Figure]:
    """Every figure image of an article, in document order.

    A ``<fig>`` with several direct graphics yields one :class:`Figure` per
    graphic (same caption). A figure without any graphic is returned with
    ``graphic=""`` so the caller can count it as skipped.
    """
    figures: list[Figure] = []
    for el in _iter_figure_elements(article):
        name = _local(el)
        group = el.getparent()
        while group is not None and _local(group) != "fig-group":
            group = group.getparent()
        group_id = group.get("id", "") if group is not None else ""
        group_label = _label(group) if group is not None else ""
        group_caption = _caption(group)[0] if group is not None else ""
        if name == "fig-group":
            hrefs = _graphics(el)
            if not hrefs:
                continue  # members carry the images
            label = _label(el)
            caption, subcaptions = _caption(el)
            fig_id = el.get("id", "")
        else:
            hrefs = _graphics(el)
            label = _label(el)
            caption, subcaptions = _caption(el)
            fig_id = el.get("id", "")
            if group_caption:
                caption = clean_caption_text(" ".join(p for p in (group_caption, label, caption) if p))
        if not fig_id:
            fig_id = f"fig{len(figures) + 1}"
        for href in hrefs or [""]:
            figures.append(
                Figure(
                    figure_id=fig_id,
                    label=label or group_label,
                    caption=caption,
                    graphic=href,
                    index=len(figures),
                    subcaptions=subcaptions,
                    group_id=group_id,
                    group_label=group_label,
                )
            )
    return figures
