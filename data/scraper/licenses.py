"""Licence codes: one normal form for JATS, the PMC bucket and Open-i.

Open-access licences differ (CC BY allows commercial reuse, CC BY-NC does
not), so every record keeps its licence and ``--license`` can restrict the
collection. Codes follow the PMC bucket's ``license_code`` spelling:
``CC BY``, ``CC BY-SA``, ``CC BY-ND``, ``CC BY-NC``, ``CC BY-NC-SA``,
``CC BY-NC-ND``, ``CC0``, plus ``public domain``, ``other`` and ``unknown``.
"""

from __future__ import annotations

import re

__all__ = ["LICENSE_CHOICES", "normalize_license", "license_allowed", "pmc_license_filter"]

LICENSE_CHOICES = ("any", "cc", "commercial")
COMMERCIAL_OK = frozenset({"CC BY", "CC BY-SA", "CC BY-ND", "CC0", "public domain"})

_CC_URL = re.compile(r"creativecommons\.org/licenses/([a-z-]+)", re.IGNORECASE)
_OPENI_CODES = {
    "by": "CC BY",
    "bysa": "CC BY-SA",
    "bynd": "CC BY-ND",
    "bync": "CC BY-NC",
    "byncsa": "CC BY-NC-SA",
    "byncnd": "CC BY-NC-ND",
}


def _code_from_parts(parts: list[str]) -> str:
    order = [p for p in ("NC", "SA", "ND") if p in parts]
    # CC uses BY-NC-SA / BY-NC-ND; SA and ND never appear together.
    return "CC BY" + "".join(f"-{p}" for p in order)


def normalize_license(value: str | None) -> str:
    """Map a licence URL, code or free text to a normal code; "unknown" if empty."""
    if not value or not value.strip():
        return "unknown"
    text = value.strip()
    low = text.lower()
    match = _CC_URL.search(low)
    if match:
        parts = [p.upper() for p in match.group(1).split("-") if p != "by"]
        return _code_from_parts(parts)
    if "publicdomain/zero" in low or re.search(r"\bcc0\b|\bcc-zero\b|cc zero", low):
        return "CC0"
    if "publicdomain/mark" in low or "public domain" in low:
        return "public domain"
    compact = re.sub(r"[\s_.-]", "", low)
    if compact in _OPENI_CODES:
        return _OPENI_CODES[compact]
    code = re.match(r"^cc[\s-]*by((?:[\s-]*(?:nc|sa|nd)\b)*)", low)
    if code:
        return _code_from_parts([p.upper() for p in re.findall(r"nc|sa|nd", code.group(1))])
    if "creative commons" in low or "attribution" in low:
        parts = []
        if re.search(r"non-?commercial", low):
            parts.append("NC")
        if re.search(r"share-?alike", low):
            parts.append("SA")
        if re.search(r"no-?deriv", low):
            parts.append("ND")
        return _code_from_parts([p.upper() for p in parts])
    return "other"


def license_allowed(code: str, option: str) -> bool:
    """Does a normal licence code pass ``--license any|cc|commercial``?

    ``any`` keeps everything (the OA filter already applies at search time);
    ``cc`` keeps Creative Commons licences; ``commercial`` keeps only licences
    that allow commercial reuse. Unknown licences pass only ``any``.
    """
    if option == "any":
        return True
    if option == "cc":
        return code.startswith("CC")
    if option == "commercial":
        return code in COMMERCIAL_OK
    raise ValueError(f"unknown licence option {option!r}; choose one of {', '.join(LICENSE_CHOICES)}")


def pmc_license_filter(option: str) -> str:
    """The esearch (db=pmc) filter terms for a licence option."""
    if option == "any":
        return "open access[filter]"
    if option == "cc":
        return "open access[filter] AND cc license[filter]"
    if option == "commercial":
        return (
            "open access[filter] AND (cc0 license[filter] OR cc by license[filter] "
            "OR cc by-sa license[filter] OR cc by-nd license[filter])"
        )
    raise ValueError(f"unknown licence option {option!r}; choose one of {', '.join(LICENSE_CHOICES)}")
