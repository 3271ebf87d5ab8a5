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

__all__ = ["split_caption", "split_caption_detailed", "Subcaption", "find_markers", "Marker", "expand_labels", "label_scheme"]

_ROMAN = ("i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x", "xi", "xii")
_ROMAN_SET = frozenset(_ROMAN)

# One label: roman numerals first so "iv" is not read as "i" + "v".
_LABEL = r"(?:(?i:viii|vii|iii|xii|ii|iv|vi|ix|xi)(?![A-Za-z])|[A-Za-z](?:\d{1,2})?['\u2032\u2019]?(?![A-Za-z])|\d{1,2}(?!\d))"
_RANGE = r"\s*(?:-|\u2013|\u2014|\u2212|to|through)\s*"
_SEP = r"\s*(?:,\s*and|,|;|/|\s&\s|\+|and|or)\s*"
_ITEM = rf"{_LABEL}(?:{_RANGE}{_LABEL})?"
_LIST = rf"{_ITEM}(?:{_SEP}{_ITEM})*"

_BOLD_OPEN, _BOLD_CLOSE = "\ue000", "\ue001"
_BOLD_TAG = re.compile(
    r"<(b|bold|strong)(?:\s[^<>]*)?>\s*\(?\s*(" + _LIST + r")\s*\)?\s*[.:)]?\s*</\1>", re.IGNORECASE
)

# Parenthesised list, optionally followed by a short remark: "(B, arrowheads)".
_PAREN = re.compile(r"\(\s*(" + _LIST + r")\s*\.?\s*(?:[,;:]\s*[^()]{1,40}?)?\s*\)")
_BOLD = re.compile(_BOLD_OPEN + r"(" + _LIST + r")" + _BOLD_CLOSE + r"\s*[.:)]?")
# Sentence-initial with punctuation: "A)", "A.", "A:", "A -", "A and B:"; the
# punctuation must be followed by a space or the end.
_PUNCT = re.compile(r"(" + _LIST + r")\s*(?:[).:]|\s[-\u2013\u2014])(?=\s|$)")
# Sentence-initial "a, weak staining ..." / "A, Axial CT ...": label, comma, then a word (kind "comma",
# accepted only as a sequence a, b, ... like bare labels).
_COMMA = re.compile(r"(" + _LIST + r"),\s+(?=[A-Za-z(\[])")
# "(B) and C) ...": a label with only a closing bracket right after a parenthesised one.
_BROKEN = re.compile(r"\s*(?:,\s*and|,|and|&|to|-|\u2013)\s*(" + _LIST + r")\)(?=\s)")
# After a comma only the unambiguous forms continue an enumeration ("b)", "b:", "b -"; not "b.").
_PUNCT_CONTINUED = re.compile(r"(" + _LIST + r")\s*(?:[):]|\s[-\u2013\u2014])(?=\s|$)")
# Sentence-initial bare label(s) followed by a word.
_BARE = re.compile(r"(" + _LIST + r")\s+(?=[A-Za-z(\[])")
# Sentence-initial "Panel A:" / "Panels B and C," / "Panel D shows".
_PANEL = re.compile(r"panels?\s+(" + _LIST + r")\s*[.:,)]?(?=\s|$)", re.IGNORECASE)

# Words before a label that make it a reference or a name, not a marker.
_REFERENCE_BEFORE = re.compile(
    r"(?:fig(?:ure)?s?\.?|panels?|table|supplementary|suppl\.?|see|type|group|class|grade|stage|"
    r"vitamin|hepatitis|lamin|protein|factor|complex|zone|region|segment|lead|chain)\s*$",
    re.IGNORECASE,
)
_PREPOSITION_BEFORE = re.compile(r"\b(?:of|in|for|from|with|between|on|at|by)\s*$", re.IGNORECASE)
# "(A) Before and (B) after treatment": a one- or two-word segment ending in "and"/"or"/"vs"
# shares the rest of the next label's phrase.
_HALF_PHRASE = re.compile(r"^\s*(\S+(?:\s+\S+)?)\s+(?:and|or|vs\.?|versus)\s*$", re.IGNORECASE)
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
    kind: str  # "paren" | "bold" | "panel" | "punct" | "comma" | "bare" | "closing"
    leading: bool = True
    inner: bool = False  # a bare label found after a comma or "and", not at a clause start


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
    return [label.rstrip("'\u2032\u2019") for label in out]


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


def _sentence_bounds(text: str, pos: int) -> int:
    """Start of the sentence that holds ``pos`` (after the last ". " that is not an abbreviation)."""
    for m in reversed(list(re.finditer(r"[.!?]\s+", text[:pos]))):
        if not _ABBREVIATIONS.search(text[: m.start() + 1]):
            return m.end()
    return 0


def find_markers(text: str) -> list[Marker]:
    """All candidate markers in cleaned text (before the scheme filter), in text order."""
    found: list[Marker] = []
    taken = [False] * (len(text) + 1)

    def add(m: re.Match, kind: str, start: int | None = None) -> Marker | None:
        begin = m.start() if start is None else start
        if any(taken[m.start() : m.end()]):
            return None
        labels = expand_labels(m.group(1))
        if not labels:
            return None
        marker = Marker(begin, m.end(), labels, kind)
        found.append(marker)
        for i in range(begin, m.end()):
            taken[i] = True
        return marker

    for m in _BOLD.finditer(text):
        add(m, "bold")
    for m in _PAREN.finditer(text):
        if _preceded_by_reference(text, m.start()):
            continue
        marker = add(m, "paren")
        # A broken bracket continues it: "(B) and C) ..." is "(B and C) ...".
        if marker is not None:
            mm = _BROKEN.match(text, m.end())
            if mm:
                add(mm, "paren", start=m.end())
    # Sentence-initial forms: scan each clause start.
    for m in re.finditer(r"(?:^|(?<=[.:;])\s+|(?<=\))\s+|(?<=" + _BOLD_CLOSE + r")\s*)(?=\S)", text):
        pos = m.end()
        if pos >= len(text) or taken[pos] or not _sentence_start(text, pos):
            continue
        for pattern, kind in ((_PANEL, "panel"), (_PUNCT, "punct"), (_BARE, "bare"), (_COMMA, "comma")):
            mm = pattern.match(text, pos)
            if mm:
                add(mm, kind)
                break
    # Enumerations continue after commas and "and": "a - before, b - after 1 month", "A), B) ...",
    # "stages: a early, b intermediate and c late"; a bare label may also start one after a comma
    # ("fish, a left and b right sagitta") -- the filter keeps bare labels only as a sequence a, b, ...
    for m in re.finditer(r"(?:(?<=,)|\band)\s+(?=\S)", text):
        pos = m.end()
        if taken[pos]:
            continue
        sentence_start = _sentence_bounds(text, pos)
        earlier = {mk.kind for mk in found if sentence_start <= mk.start < pos}
        mm = _PUNCT_CONTINUED.match(text, pos)
        if mm and "punct" in earlier:
            add(mm, "punct")
            continue
        mm = _BARE.match(text, pos)
        if mm and all(label_scheme(label) == "letter" and len(label) == 1 for label in expand_labels(mm.group(1))):
            marker = add(mm, "bare")
            if marker is not None:
                marker.inner = True
    _continue_sequences(text, found, taken, add)
    found.sort(key=lambda mk: mk.start)
    return found


def _continue_sequences(text: str, found: list[Marker], taken: list[bool], add) -> None:
    """Labels run in order: after a marker "A." (or "A)", "A:") the next label written the same way
    is a marker even mid-sentence, as in captions without full stops: "A. Before treatment B. After"."""
    queue = [mk for mk in found if mk.kind == "punct" and len(mk.labels) == 1]
    while queue:
        mk = queue.pop()
        label = mk.labels[-1]
        if len(label) != 1 or not label.isalpha() or label in "zZ":
            continue
        form = text[mk.start : mk.end].strip()[len(label) :].strip()[:1]
        if form not in ".):":
            continue
        nxt = re.compile(r"(?<=[a-z0-9,\s])\s(" + chr(ord(label) + 1) + r")" + re.escape(form) + r"\s+(?=[A-Z(])")
        m = nxt.search(text, mk.end)
        if m and not any(taken[m.start(1) : m.end()]):
            new = add(m, "punct", start=m.start(1))
            if new is not None:
                queue.append(new)


def _choose_scheme(markers: list[Marker]) -> str | None:
    """The top-level label scheme: letters, digits or roman numerals, by weighted votes of the markers.

    Letters with roman numerals inside ("(A) controls (i, ii) ... (B) ...") stay letters: the
    numerals are sub-labels when a letter marker comes first and the letters start at a/A.
    """
    weights = {"paren": 2.0, "bold": 3.0, "panel": 2.0, "punct": 1.5, "comma": 1.2, "bare": 1.0}
    has_roman = any(label_scheme(label) == "roman" for mk in markers for label in mk.labels)
    votes: dict[str, float] = {}
    first: str | None = None
    letters: set[str] = set()
    for mk in markers:
        schemes = {("roman" if has_roman and _roman_value(label) else label_scheme(label)) for label in mk.labels}
        if len(schemes) == 1:
            scheme = schemes.pop()
            votes[scheme] = votes.get(scheme, 0.0) + weights[mk.kind]
            first = first or scheme
            if scheme == "letter":
                letters.update(label[0].lower() for label in mk.labels)
    if not votes:
        return None
    if "letter" in votes and "roman" in votes and first == "letter" and {"a", "b"} <= letters:
        return "letter"
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


def _is_sequence(labels: list[str], scheme: str) -> bool:
    """Do these labels (text order) run a, b, c ... from the scheme's first label, without gaps?"""
    ranks = [_rank(label, scheme) for label in labels]
    first = _rank({"digit": "1", "roman": "i"}.get(scheme, "a"), scheme)
    step = 100 if scheme == "letter" else 1
    return len(ranks) >= 2 and ranks[0] == first and all(b - a == step for a, b in zip(ranks, ranks[1:]))


def _filter_markers(markers: list[Marker], text: str) -> list[Marker]:
    """Keep markers of the caption's label scheme that form a believable panel-label set."""
    scheme = _choose_scheme(markers)
    if scheme is None:
        return []
    kept = [mk for mk in markers if all(_fits(label, scheme) for label in mk.labels)]
    # Letter+digit labels ("T1", "T2") only when plain letters of the same range exist or several share a letter;
    # "x10" / "x400" are magnifications.
    if scheme == "letter":
        plain = {label.lower() for mk in kept for label in mk.labels if len(label) == 1}
        with_digit = [label for mk in kept for label in mk.labels if len(label) > 1]
        letters = {label[0].lower() for label in with_digit} - {"x"}
        good_letters = {
            ch for ch in letters
            if ch in plain or sum(label[0].lower() == ch for label in with_digit) >= 2
        }
        kept = [mk for mk in kept if all(len(label) == 1 or label[0].lower() in good_letters for label in mk.labels)]
        # Roman sub-labels inside lettered panels: "(i)", "(v)" are numerals, not letters, when the
        # caption also has "ii"/"iii" and its letters stop before them.
        if any(label_scheme(label) == "roman" for mk in markers for label in mk.labels):
            letters_used = {label[0].lower() for mk in kept for label in mk.labels if _roman_value(label) is None}
            kept = [
                mk for mk in kept
                if not any(_roman_value(label) and chr(ord(label[0].lower()) - 1) not in letters_used for label in mk.labels)
            ]
    kept = _filter_bare(kept, text, scheme)
    distinct = {label.lower() for mk in kept for label in mk.labels}
    if len(distinct) < 2:
        return []
    if scheme == "digit" and not {"1", "2"} <= distinct:
        # Numbered panels start 1, 2, ...; citations and counts do not.
        return []
    return kept


def _filter_bare(kept: list[Marker], text: str, scheme: str) -> list[Marker]:
    """Bare ("a early") and comma ("a, weak staining") labels are words too: keep them only as a sequence.

    Sentence-initial ones must run from the first label ("A 45-year-old man" alone is an article);
    upper-case ones there need a capitalised next word ("A Axial", not "A large"). Inside a sentence
    (after a colon, comma or "and") they must run a, b, c ... in text order within that sentence.
    """
    loose = [mk for mk in kept if mk.kind in ("bare", "comma")]
    if not loose:
        return kept
    bad: set[int] = set()
    initial = [mk for mk in loose if not mk.inner]
    ranks = sorted({_rank(mk.labels[0], scheme) for mk in initial})
    first = _rank({"digit": "1", "roman": "i"}.get(scheme, "a"), scheme)
    sentences: dict[int, list[Marker]] = {}
    for mk in loose:
        sentences.setdefault(_sentence_bounds(text, mk.start), []).append(mk)
    in_sequence: set[int] = set()
    for group in sentences.values():
        labels = [label for mk in group for label in mk.labels]
        if _is_sequence(labels, scheme):
            in_sequence.update(id(mk) for mk in group)
    for mk in loose:
        if id(mk) in in_sequence and (len(sentences[_sentence_bounds(text, mk.start)]) > 1):
            continue  # a run a, b, c inside one sentence: "stages: a early, b intermediate, c late"
        if mk.inner:
            bad.add(id(mk))
            continue
        if not (len(ranks) >= 2 and ranks[0] == first):
            bad.add(id(mk))
        elif mk.labels[0][0].isupper() and not _next_word_capitalised(text, mk.end):
            bad.add(id(mk))
    return [mk for mk in kept if id(mk) not in bad]


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


_GROUPED = re.compile(r"\(\s*(\(\s*" + _LIST + r"\s*\)(?:\s*(?:,|and|&|;)?\s*\(\s*" + _LIST + r"\s*\))+)\s*\)")
# "...reduced tumour growth.A. Images of ...": a label glued to the end of the previous sentence.
_GLUED = re.compile(r"(?:(?<=[a-z]{2})|(?<=[)\]%\d]))\.(?=[A-Za-z]\d{0,2}[.):]\s)")


def _prepare(text: str) -> str:
    """Unescape, turn bold label markup into private-use brackets, strip the rest of the markup,
    ungroup "((a), (b))" into "(a, b)" and unglue "growth.A. Images"."""
    if not text:
        return ""
    for _ in range(2):  # doubly escaped markup (&amp;lt;b&amp;gt;) is common in Open-i
        if "&" not in text:
            break
        text = html.unescape(text)
    text = _BOLD_TAG.sub(lambda m: f" {_BOLD_OPEN}{m.group(2)}{_BOLD_CLOSE} ", text)
    text = clean_caption_text(text)
    text = _GROUPED.sub(lambda m: "(" + ", ".join(re.findall(r"\(\s*([^()]*?)\s*\)", m.group(1))) + ")", text)
    return _GLUED.sub(". ", text)


@dataclass(frozen=True)
class Subcaption:
    """One panel's part of a caption: top-level ``label``, its ``text``, and the ``sublabels``
    (A1, A2 of panel A) the caption names inside it."""

    label: str
    text: str
    sublabels: tuple[str, ...] = ()


def split_caption(text: str) -> list[tuple[str, str]]:
    """Split a compound-figure caption into ``[(label, subcaption), ...]`` in label order.

    Returns ``[]`` when the caption names fewer than two panels. Labels keep
    the caption's case ("A" or "a"); ranges and lists are expanded; sub-labels
    ("A1", "A2") are folded into their panel ("A") -- see :func:`split_caption_detailed`.
    Raw HTML/JATS is accepted (bold labels are markers).
    """
    return [(sub.label, sub.text) for sub in split_caption_detailed(text)]


def split_caption_detailed(text: str) -> list[Subcaption]:
    """Like :func:`split_caption`, with each panel's sub-labels."""
    text = _prepare(text or "")
    if not text:
        return []
    markers = _filter_markers(find_markers(text), text)
    if not markers:
        return []
    scheme = _choose_scheme(markers) or "letter"
    top = _top_labels(markers, scheme)
    previous: Marker | None = None
    named: set[str] = set()
    for mk in markers:
        first_mention = not any(label.lower() in named for label in mk.labels)
        named.update(label.lower() for label in mk.labels)
        mk.leading = (
            mk.kind in ("bold", "punct", "comma", "bare", "panel")
            or _sentence_start(text, mk.start)
            or _after_marker(text, mk, markers)
            # "(a) Week 0, (b) week 2 and (c) week 4": an enumeration of leading markers.
            or (previous is not None and previous.leading and _continues_enumeration(text, previous, mk))
            # "... of Lee et al. (A) Bland-Altman plot": a capitalised word follows, after a dot.
            or (text[: mk.start].rstrip().endswith(".") and _next_word_capitalised(text, mk.end))
            # "Micrographs of (A) control and (B) treated cells": a first mention after a preposition.
            or (first_mention and bool(_PREPOSITION_BEFORE.search(text[max(0, mk.start - 12) : mk.start])))
        )
        previous = mk
    markers = _add_closing_markers(text, markers, top)
    own: dict[str, list[str]] = {}
    display: dict[str, str] = {}
    subs: dict[str, list[str]] = {}

    def give(labels: list[str], segment: str) -> None:
        segment = _tidy(segment)
        for label in labels:
            parent = top.get(label.lower(), label)
            key = parent.lower()
            display.setdefault(key, parent)
            own.setdefault(key, [])
            if parent.lower() != label.lower() and label not in subs.setdefault(key, []):
                subs[key].append(label)
            if segment and segment not in own[key]:
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
    waiting: list[str] = []  # labels of markers with no text of their own: "(A), (B) text", "(B) and C) text"
    for i, mk in enumerate(leading):
        stop = leading[i + 1].start if i + 1 < len(leading) else len(text)
        segment = _strip_inner_markers(text, mk.end, stop, markers)
        if i + 1 == len(leading):
            segment, tail = _split_shared_tail(segment)
        if not _tidy(segment) and i + 1 < len(leading):
            waiting += mk.labels
            continue
        half = _HALF_PHRASE.match(segment)
        if half and i + 1 < len(leading):
            nxt_stop = leading[i + 2].start if i + 2 < len(leading) else len(text)
            rest = _strip_inner_markers(text, leading[i + 1].end, nxt_stop, markers).strip().split(None, 1)
            if len(rest) == 2:
                remainder = rest[1] if i + 2 < len(leading) else _split_shared_tail(rest[1])[0]
                segment = f"{half.group(1)} {remainder}"
        give(waiting + mk.labels, segment)
        waiting = []
    # Sub-labels named inside a panel's text, "(b) serial sections (b1-b4)": the panel has those sub-panels.
    for mk in markers:
        for label in mk.labels if not mk.leading else ():
            key = top.get(label.lower(), label).lower()
            if key != label.lower() and key in own and label not in subs.setdefault(key, []):
                subs[key].append(label)
    lead = _join([_tidy(p) for p in lead_parts])
    keys = sorted(own, key=lambda k: _rank(display[k], scheme))
    if len(keys) < 2:
        return []
    return [
        Subcaption(display[k], _join([lead] + own[k] + [tail]), tuple(sorted(subs.get(k, []), key=lambda s: _rank(s, scheme))))
        for k in keys
    ]


def _top_labels(markers: list[Marker], scheme: str) -> dict[str, str]:
    """Sub-label -> its panel: "a1" -> "a" when the caption names two or more panels' letters.

    With one letter only ("A1", "A2", "A3") the sub-labels are the panels.
    """
    if scheme != "letter":
        return {}
    labels = [label for mk in markers for label in mk.labels]
    letters = {label[0].lower() for label in labels}
    if len(letters) < 2:
        return {}
    return {label.lower(): label[0] for label in labels if len(label) > 1}


def _add_closing_markers(text: str, markers: list[Marker], top: dict[str, str]) -> list[Marker]:
    """A label that closes a sentence inside another label's text, and that no leading marker names,
    takes that sentence: "(B) Lateral view. CT showing the fracture line (C)." gives C its sentence."""
    leading = [mk for mk in markers if mk.leading]
    if not leading:
        return markers
    named = {top.get(label.lower(), label).lower() for mk in leading for label in mk.labels}
    added = []
    for mk in markers:
        if mk.leading or mk.start < leading[0].start:
            continue
        after = text[mk.end :].lstrip()
        if after and after[0] not in ".;":
            continue
        if any(top.get(label.lower(), label).lower() in named for label in mk.labels):
            continue
        start = _sentence_bounds(text, mk.start)
        owner = max((ld for ld in leading if ld.start <= mk.start), key=lambda ld: ld.start)
        if start <= owner.end:
            continue  # the owner's own first sentence: "(B) view of the fracture (C)." stays B's
        added.append(Marker(start, start, list(mk.labels), "closing", leading=True))
        named.update(top.get(label.lower(), label).lower() for label in mk.labels)
    return sorted(markers + added, key=lambda mk: (mk.start, mk.end))


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
