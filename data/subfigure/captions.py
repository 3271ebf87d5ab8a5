"""Caption splitting: find the panel-label scheme of a caption and cut it into subcaptions.

Markers we recognise (``L`` is a label: a letter, a 1-2 digit number, a roman
numeral, or a letter with a digit such as "A1"; lists use "," "/" "&" "and",
ranges "-" "–" "to" "through"):

* parenthesised ``(A)``, ``(a, b)``, ``(A-C)``, ``(A1/A2)``, ``(B, arrowheads)``
* bold in HTML/JATS ``<b>A</b>``, ``<bold>(a)</bold>``
* sentence-initial ``A)``, ``A.``, ``A:``, ``A -``, ``A and B:``, ``A-C.``
* sentence-initial bare ``d Transversal T1-weighted ...`` (only when the bare
  labels form a sequence, so "A 45-year-old man" stays text)

A marker at the start of a sentence (or after ``;`` ``,`` or another marker)
*leads* its text: "(A) Axial CT. (B) Coronal CT." A marker after a word
*trails* the phrase before it: "Axial (A) and coronal (B) CT images" gives A
"Axial CT images" and B "coronal CT images" (the rest of the sentence is
shared by the labels of that sentence).

A subcaption is the shared lead (text before the first label that belongs to
no label) + the label's own text (all of its segments; ranges and lists give
the text to every label) + a shared tail (closing sentences such as "Scale
bars, 50 um." or "Arrows indicate ..." after the last segment).

Not labels: "Figure 2A" / "Fig. 1b" / "panel A" references, "(n = 5)",
"(P < 0.05)", "vitamin A", "type B", "T2-weighted", the article "A" or the
pronoun "I" starting a sentence, citations "[12]", lone "(1)".
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from data.captions import clean_caption_text

__all__ = ["split_caption", "find_markers", "Marker", "expand_labels", "label_scheme"]

_ROMAN = ("i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x", "xi", "xii")
_ROMAN_SET = frozenset(_ROMAN)

# One label: roman numerals first so "iv" is not read as "i" + "v".
_LABEL = r"(?:(?i:viii|vii|iii|xii|ii|iv|vi|ix|xi)(?![A-Za-z])|[A-Za-z](?:\d{1,2})?'?(?![A-Za-z])|\d{1,2}(?!\d))"
_RANGE = r"\s*(?:-|\u2013|\u2014|\u2212|to|through)\s*"
_SEP = r"\s*(?:,\s*and|,|;|/|&|\+|and|or)\s*"
_ITEM = rf"{_LABEL}(?:{_RANGE}{_LABEL})?"
_LIST = rf"{_ITEM}(?:{_SEP}{_ITEM})*"

_BOLD_OPEN, _BOLD_CLOSE = "\ue000", "\ue001"
_BOLD_TAG = re.compile(
    r"<(b|bold|strong)(?:\s[^<>]*)?>\s*\(?\s*(" + _LIST + r")\s*\)?\s*[.:)]?\s*</\1>", re.IGNORECASE
)

# Parenthesised list, optionally followed by a short remark: "(B, arrowheads)".
_PAREN = re.compile(r"\(\s*(" + _LIST + r")\s*(?:[,;]\s*[^()]{1,40}?)?\s*\)")
_BOLD = re.compile(_BOLD_OPEN + r"(" + _LIST + r")" + _BOLD_CLOSE + r"\s*[.:)]?")
# Sentence-initial with punctuation: "A)", "A.", "A:", "A -", "A and B:"; the
# punctuation must be followed by a space or the end.
_PUNCT = re.compile(r"(" + _LIST + r")\s*(?:[).:]|\s[-\u2013\u2014])(?=\s|$)")
# After a comma only the unambiguous forms continue an enumeration ("b)", "b:", "b -"; not "b.").
_PUNCT_CONTINUED = re.compile(r"(" + _LIST + r")\s*(?:[):]|\s[-\u2013\u2014])(?=\s|$)")
# Sentence-initial bare label(s) followed by a word.
_BARE = re.compile(r"(" + _LIST + r")\s+(?=[A-Za-z(\[])")
# Sentence-initial "Panel A:" / "Panels B and C," / "Panel D shows".
_PANEL = re.compile(r"panels?\s+(" + _LIST + r")\s*[.:,)]?(?=\s|$)", re.IGNORECASE)

# Words before a label that make it a reference or a name, not a marker.
_REFERENCE_BEFORE = re.compile(
    r"(?:fig(?:ure)?s?\.?|panels?|table|supplementary|suppl\.?|see|in|of|type|group|class|grade|stage|"
    r"vitamin|hepatitis|lamin|protein|factor|complex|zone|region|segment|lead|chain)\s*$",
    re.IGNORECASE,
)
# Sentence starts after these (abbreviations that end with a dot do not end a sentence).
_ABBREVIATIONS = re.compile(r"(?:\bet al|\be\.g|\bi\.e|\bvs|\bFig|\bFigs|\bapprox|\bca|\bNo|\bDr)\.\s*$", re.IGNORECASE)
_SHARED_TAIL = re.compile(
    r"^(?:scale\s*bars?|bars?\s*(?:[=:,]|represent|indicate|denote)|arrows?|arrowheads?|asterisks?|\*|"
    r"data\s+(?:are|is|represent)|values\s+(?:are|represent)|error\s+bars|abbreviations?|"
    r"(?:original\s+)?magnifications?|n\s*=|results\s+are)\b",
    re.IGNORECASE,
)
_CONNECTOR = re.compile(r"^(?:,|;|:|and|or|as well as|while|whereas|with|respectively)\b[\s,]*", re.IGNORECASE)


@dataclass
class Marker:
    """A label marker found in the text: its span, labels and how it was written."""

    start: int
    end: int
    labels: list[str]
    kind: str  # "paren" | "bold" | "panel" | "punct" | "bare"
    leading: bool = True


def _roman_value(label: str) -> int | None:
    low = label.lower()
    return _ROMAN.index(low) + 1 if low in _ROMAN_SET else None


def expand_labels(text: str) -> list[str]:
    """Labels of a marker list: "A-C" -> A, B, C; "A1/A2" -> A1, A2; "a, c and d" -> a, c, d."""
    out: list[str] = []
    for item in re.split(_SEP, text.strip()):
        item = item.strip()
        if not item:
            continue
        parts = re.split(_RANGE, item)
        if len(parts) == 2:
            lo, hi = parts[0].strip(), parts[1].strip()
            out.extend(_expand_range(lo, hi) or [lo, hi])
        else:
            out.append(item)
    return [label.rstrip("'") for label in out]


def _expand_range(lo: str, hi: str) -> list[str] | None:
    if lo.isdigit() and hi.isdigit() and int(lo) < int(hi) <= int(lo) + 26:
        return [str(i) for i in range(int(lo), int(hi) + 1)]
    rlo, rhi = _roman_value(lo), _roman_value(hi)
    if rlo and rhi and len(lo) + len(hi) > 2 and rlo < rhi:
        return [(_ROMAN[i - 1].upper() if lo.isupper() else _ROMAN[i - 1]) for i in range(rlo, rhi + 1)]
    # Letter ranges, with the same digit suffix or none: "A-C", "a1-a3".
    m_lo = re.fullmatch(r"([A-Za-z])(\d*)", lo)
    m_hi = re.fullmatch(r"([A-Za-z])(\d*)", hi)
    if m_lo and m_hi:
        (a, da), (b, db) = m_lo.groups(), m_hi.groups()
        if a.lower() == b.lower() and da and db and int(da) < int(db) <= int(da) + 20:
            return [f"{a}{i}" for i in range(int(da), int(db) + 1)]
        if not da and not db and a.isupper() == b.isupper() and ord(a) < ord(b) <= ord(a) + 25:
            return [chr(c) for c in range(ord(a), ord(b) + 1)]
    return None


def label_scheme(label: str) -> str:
    """"letter", "digit" or "roman" (multi-letter roman numerals only; "i" alone is ambiguous)."""
    if label.isdigit():
        return "digit"
    if len(label) > 1 and label.lower() in _ROMAN_SET:
        return "roman"
    return "letter"


def _sentence_start(text: str, pos: int) -> bool:
    """Is ``pos`` at the start of the text or of a sentence/clause (after . : ; or a marker)?"""
    before = text[:pos].rstrip()
    if not before:
        return True
    if before[-1] in ":;" or before.endswith(_BOLD_CLOSE):
        return True
    if before[-1] == ".":
        return not _ABBREVIATIONS.search(before)
    return False


def _preceded_by_reference(text: str, pos: int) -> bool:
    return bool(_REFERENCE_BEFORE.search(text[max(0, pos - 25) : pos]))


def find_markers(text: str) -> list[Marker]:
    """All candidate markers in cleaned text (before the scheme filter), in text order."""
    found: list[Marker] = []
    taken = [False] * (len(text) + 1)

    def add(m: re.Match, kind: str) -> None:
        if any(taken[m.start() : m.end()]):
            return
        labels = expand_labels(m.group(1))
        if not labels:
            return
        found.append(Marker(m.start(), m.end(), labels, kind))
        for i in range(m.start(), m.end()):
            taken[i] = True

    for m in _BOLD.finditer(text):
        add(m, "bold")
    for m in _PAREN.finditer(text):
        if _preceded_by_reference(text, m.start()):
            continue
        add(m, "paren")
    # Sentence-initial forms: scan each clause start.
    for m in re.finditer(r"(?:^|(?<=[.:;])\s+|(?<=\))\s+|(?<=" + _BOLD_CLOSE + r")\s*)(?=\S)", text):
        pos = m.end()
        if pos >= len(text) or taken[pos] or not _sentence_start(text, pos):
            continue
        for pattern, kind in ((_PANEL, "panel"), (_PUNCT, "punct"), (_BARE, "bare")):
            mm = pattern.match(text, pos)
            if mm:
                add(mm, kind)
                break
    # Enumerations continue after commas: "a - before, b - after 1 month", "A), B) ...";
    # accepted only after a marker of the same kind earlier in the same sentence.
    for m in re.finditer(r"(?<=,)\s+(?=\S)", text):
        pos = m.end()
        if taken[pos]:
            continue
        mm = _PUNCT_CONTINUED.match(text, pos)
        if not mm:
            continue
        sentence_start = max(text.rfind(". ", 0, pos), text.rfind("; ", 0, pos), 0)
        if any(mk.kind == "punct" and sentence_start <= mk.start < pos for mk in found):
            add(mm, "punct")
    found.sort(key=lambda mk: mk.start)
    return found


def _choose_scheme(markers: list[Marker]) -> str | None:
    weights = {"paren": 2.0, "bold": 3.0, "panel": 2.0, "punct": 1.5, "bare": 1.0}
    has_roman = any(label_scheme(label) == "roman" for mk in markers for label in mk.labels)
    votes: dict[str, float] = {}
    for mk in markers:
        schemes = {("roman" if has_roman and _roman_value(label) else label_scheme(label)) for label in mk.labels}
        if len(schemes) == 1:
            scheme = schemes.pop()
            votes[scheme] = votes.get(scheme, 0.0) + weights[mk.kind]
    if not votes:
        return None
    return max(votes, key=votes.get)


def _fits(label: str, scheme: str) -> bool:
    if scheme == "roman":
        return _roman_value(label) is not None
    return label_scheme(label) == scheme


def _rank(label: str, scheme: str) -> int:
    if scheme == "digit":
        return int(label)
    if scheme == "roman":
        return _roman_value(label) or 0
    return (ord(label[0].lower()) - ord("a") + 1) * 100 + (int(label[1:]) if label[1:].isdigit() else 0)


def _filter_markers(markers: list[Marker], text: str) -> list[Marker]:
    """Keep markers of the caption's label scheme that form a believable panel-label set."""
    scheme = _choose_scheme(markers)
    if scheme is None:
        return []
    kept = [mk for mk in markers if all(_fits(label, scheme) for label in mk.labels)]
    # Letter+digit labels ("T1", "T2") only when plain letters of the same range exist or several share a letter.
    if scheme == "letter":
        plain = {label.lower() for mk in kept for label in mk.labels if len(label) == 1}
        with_digit = [label for mk in kept for label in mk.labels if len(label) > 1]
        letters = {label[0].lower() for label in with_digit}
        good_letters = {
            ch for ch in letters
            if ch in plain or sum(label[0].lower() == ch for label in with_digit) >= 2
        }
        kept = [mk for mk in kept if all(len(label) == 1 or label[0].lower() in good_letters for label in mk.labels)]
        # "A" article / "I" pronoun as bare labels need company: a sequence a, b(, c) of bare labels.
    bare = [mk for mk in kept if mk.kind == "bare"]
    if bare:
        ranks = sorted({_rank(mk.labels[0], scheme) for mk in bare})
        first = _rank({"digit": "1", "roman": "i"}.get(scheme, "a"), scheme)
        sequence = len(ranks) >= 2 and ranks[0] == first
        if not sequence:
            kept = [mk for mk in kept if mk.kind != "bare"]
        else:
            # Upper-case bare labels must be followed by a capitalised word ("A Axial", not "A large").
            kept = [
                mk for mk in kept
                if mk.kind != "bare" or not mk.labels[0][0].isupper() or _next_word_capitalised(text, mk.end)
            ]
    distinct = {label.lower() for mk in kept for label in mk.labels}
    if len(distinct) < 2:
        return []
    if scheme == "digit" and not {"1", "2"} <= distinct:
        # Numbered panels start 1, 2, ...; citations and counts do not.
        return []
    return kept


def _next_word_capitalised(text: str, pos: int) -> bool:
    m = re.match(r"\s*\(?([A-Za-z])", text[pos:])
    return bool(m and m.group(1).isupper())


def _split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans (start, end) on ". " / "? " / "! " boundaries that are not abbreviations."""
    spans = []
    start = 0
    for m in re.finditer(r"[.!?](?=\s+[A-Z(\[*\d" + _BOLD_OPEN + r"]|\s*$)", text):
        end = m.end()
        if _ABBREVIATIONS.search(text[: end]):
            continue
        spans.append((start, end))
        start = end
    if start < len(text):
        spans.append((start, len(text)))
    return [(s, e) for s, e in spans if text[s:e].strip()]


def _tidy(text: str) -> str:
    text = text.replace(_BOLD_OPEN, "").replace(_BOLD_CLOSE, "")
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+([,.;:])", r"\1", text)
    text = re.sub(r"\(\s*\)", "", text)
    prev = None
    while prev != text:
        prev = text
        text = _CONNECTOR.sub("", text).strip()
    return text.strip(" ,;:-\u2013\u2014")


def _join(parts: list[str]) -> str:
    out = []
    for part in parts:
        part = part.strip()
        if not part:
            continue
        if out and not re.search(r"[.!?:;]$", out[-1]):
            out[-1] += "."
        out.append(part)
    return " ".join(out)


def _prepare(text: str) -> str:
    """Unescape, turn bold label markup into private-use brackets, strip the rest of the markup."""
    if not text:
        return ""
    for _ in range(2):  # doubly escaped markup (&amp;lt;b&amp;gt;) is common in Open-i
        if "&" not in text:
            break
        text = html.unescape(text)
    text = _BOLD_TAG.sub(lambda m: f" {_BOLD_OPEN}{m.group(2)}{_BOLD_CLOSE} ", text)
    return clean_caption_text(text)


def split_caption(text: str) -> list[tuple[str, str]]:
    """Split a compound-figure caption into ``[(label, subcaption), ...]`` in label order.

    Returns ``[]`` when the caption names fewer than two panels. Labels keep
    the caption's case ("A" or "a"); ranges and lists are expanded. Raw
    HTML/JATS is accepted (bold labels are markers).
    """
    text = _prepare(text or "")
    if not text:
        return []
    markers = _filter_markers(find_markers(text), text)
    if not markers:
        return []
    scheme = _choose_scheme(markers) or "letter"
    previous: Marker | None = None
    for mk in markers:
        mk.leading = (
            mk.kind in ("bold", "punct", "bare", "panel")
            or _sentence_start(text, mk.start)
            or _after_marker(text, mk, markers)
            # "(a) Week 0, (b) week 2 and (c) week 4": an enumeration of leading markers.
            or (previous is not None and previous.leading and _continues_enumeration(text, previous, mk))
            # "... of Lee et al. (A) Bland-Altman plot": a capitalised word follows, after a dot.
            or (text[: mk.start].rstrip().endswith(".") and _next_word_capitalised(text, mk.end))
        )
        previous = mk
    own: dict[str, list[str]] = {}
    display: dict[str, str] = {}

    def give(labels: list[str], segment: str) -> None:
        segment = _tidy(segment)
        for label in labels:
            key = label.lower()
            display.setdefault(key, label)
            own.setdefault(key, [])
            if segment:
                own[key].append(segment)

    leading = [mk for mk in markers if mk.leading]
    first_lead = leading[0].start if leading else len(text)
    # Region before the first leading marker: lead text plus trailing-style sentences.
    lead_parts: list[str] = []
    after_parts: list[str] = []
    _assign_trailing(
        text, 0, first_lead, [mk for mk in markers if not mk.leading and mk.start < first_lead], give, lead_parts, after_parts
    )
    tail = ""
    if leading:
        lead_parts += after_parts
    else:
        # Only trailing markers: unlabelled closing sentences describe every panel.
        tail = _join([_tidy(p) for p in after_parts])
    for i, mk in enumerate(leading):
        stop = leading[i + 1].start if i + 1 < len(leading) else len(text)
        segment = _strip_inner_markers(text, mk.end, stop, markers)
        if i + 1 == len(leading):
            segment, tail = _split_shared_tail(segment)
        give(mk.labels, segment)
    lead = _join([_tidy(p) for p in lead_parts])
    keys = sorted(own, key=lambda k: _rank(display[k], scheme))
    if len(keys) < 2:
        return []
    return [(display[k], _join([lead] + own[k] + [tail])) for k in keys]


def _continues_enumeration(text: str, previous: Marker, mk: Marker) -> bool:
    """Is ``mk`` preceded by "," / "and" in the same sentence as the leading marker before it?"""
    between = text[previous.end : mk.start]
    if re.search(r"[.;:]\s", between):
        return False
    return bool(re.search(r"(?:,|\band|\bor)\s*$", between))


def _after_marker(text: str, mk: Marker, markers: list[Marker]) -> bool:
    """A marker right after another marker or a comma that follows one leads too: "(A), (B) ..."."""
    before = text[: mk.start].rstrip().rstrip(",")
    return any(other.end >= len(before) - 1 and other.end <= mk.start and other.leading for other in markers if other is not mk)


def _strip_inner_markers(text: str, start: int, stop: int, markers: list[Marker]) -> str:
    """Text of a leading segment with any trailing-style label markers inside it removed."""
    pieces = []
    pos = start
    for mk in markers:
        if start <= mk.start < stop and not mk.leading:
            pieces.append(text[pos : mk.start])
            pos = mk.end
    pieces.append(text[pos:stop])
    return "".join(pieces)


def _split_shared_tail(segment: str) -> tuple[str, str]:
    """Move closing sentences that describe every panel ("Scale bars, 50 um.") out of the last segment."""
    spans = _split_sentences(segment)
    cut = len(spans)
    while cut > 1 and _SHARED_TAIL.match(segment[spans[cut - 1][0] : spans[cut - 1][1]].strip()):
        cut -= 1
    if cut == len(spans):
        return segment, ""
    boundary = spans[cut][0]
    return segment[:boundary], _tidy(segment[boundary:])


def _assign_trailing(
    text: str, start: int, stop: int, trailing: list[Marker], give, lead_parts: list[str], after_parts: list[str]
) -> None:
    """Sentences before the first leading marker: with trailing markers they are split, else they are
    lead (before the first labelled sentence) or closing text (after it)."""
    seen_marker = False
    for s, e in _split_sentences(text[start:stop]):
        s, e = s + start, e + start
        inside = [mk for mk in trailing if s <= mk.start < e]
        if not inside:
            (after_parts if seen_marker else lead_parts).append(text[s:e])
            continue
        seen_marker = True
        pos = s
        phrases = []
        for mk in inside:
            phrases.append(_tidy(text[pos : mk.start]))
            pos = mk.end
        # The rest of the sentence ("... CT images show a mass.") belongs to all its labels.
        rest = _tidy(text[pos:e])
        for mk, phrase in zip(inside, phrases):
            give(mk.labels, f"{phrase} {rest}".strip())
