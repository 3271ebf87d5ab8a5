"""Caption cleaning: markup removal keeps text, BLIP normalisation matches BLIP's rules."""

import pytest

from data.captions import clean_caption_text, count_words, pre_caption


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("<b>A</b> Axial CT &amp; MRI", "A Axial CT & MRI"),
        ("&lt;b&gt;(B)&lt;/b&gt; T2-weighted", "(B) T2-weighted"),  # doubly escaped (Open-i)
        ("line one<br/>line two", "line one line two"),
        ("10<sup>-3</sup> mm", "10-3 mm"),
        ("lesion <5 mm and >3 mm", "lesion <5 mm and >3 mm"),  # not tags
        ("  tabs\tand\nnewlines  ", "tabs and newlines"),
        ("zero\u200bwidth\u00a0space", "zerowidth space"),
        (None, ""),
        ("", ""),
    ],
)
def test_clean_caption_text(raw, expected):
    assert clean_caption_text(raw) == expected


def test_pre_caption_follows_blip_rules():
    # lowercase; . ! " ( ) * # : ; ~ become spaces; whitespace collapsed; stripped
    assert pre_caption('(A) Axial T2: "Large" lesion; see *arrow* ~ #1!') == "a axial t2 large lesion see arrow 1"
    assert pre_caption("<i>Fig.</i> 2.5 cm") == "fig 2 5 cm"


def test_pre_caption_max_words():
    text = " ".join(f"w{i}" for i in range(40))
    assert pre_caption(text, max_words=30).split() == [f"w{i}" for i in range(30)]
    assert count_words(pre_caption(text, max_words=0)) == 40
