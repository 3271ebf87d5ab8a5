"""Caption splitting against hand-written expected splits, plus the tricky non-labels."""

import pytest

from data.subfigure.captions import expand_labels, split_caption, split_caption_detailed
from data.subfigure.metrics import caption_split_scores
from tests.subfigure_caption_cases import CASES

SCORED = [c for c in CASES if c["split"] in ("dev", "heldout", "dev11")]


@pytest.mark.parametrize("case", SCORED, ids=[f"{c['split']}-{i}-{'-'.join(c['tags'][:2])}" for i, c in enumerate(SCORED)])
def test_hand_written_caption(case):
    pred = split_caption(case["caption"])
    exact, f1 = caption_split_scores(pred, case["expected"])
    assert exact, (pred, case["expected"])
    assert f1 >= 0.85, (pred, case["expected"])


@pytest.mark.parametrize(
    "text, labels",
    [("A-C", ["A", "B", "C"]), ("a\u2013d", ["a", "b", "c", "d"]), ("A1/A2", ["A1", "A2"]), ("A, C-E", ["A", "C", "D", "E"]),
     ("a and b", ["a", "b"]), ("ii-iv", ["ii", "iii", "iv"]), ("1-3", ["1", "2", "3"]), ("B1-B3", ["B1", "B2", "B3"]),
     ("A, B, and C", ["A", "B", "C"])],
)
def test_expand_labels(text, labels):
    assert expand_labels(text) == labels


def test_range_text_goes_to_every_label_and_lead_is_shared():
    pairs = dict(split_caption("Lead sentence. (A-C) Same text. (D) Other."))
    assert set(pairs) == {"A", "B", "C", "D"}
    assert pairs["A"] == pairs["B"] == pairs["C"] == "Lead sentence. Same text."
    assert pairs["D"] == "Lead sentence. Other."


@pytest.mark.parametrize(
    "caption",
    [
        None,
        "",
        "   ",
        "A 54-year-old woman. A large mass is seen.",
        "I think this is a case of vitamin A deficiency.",
        "Figure 2A shows the same as Fig. 2B.",
        "Mean (SD) values (n = 12) at 5 mm and 10 A (P < 0.05) [3].",
        "(A) Only one panel is named.",
        "Compare with (1) and (3) in the text.",
    ],
)
def test_not_compound(caption):
    assert split_caption(caption) == []


@pytest.mark.parametrize("case", [c for c in CASES if "sublabels" in c], ids=lambda c: c["caption"][:30])
def test_sublabels_fold_into_their_panel(case):
    """Issue 11: A1/A2 belong to panel A; one subcaption for A, the sub-labels in their own field."""
    got = {sub.label: list(sub.sublabels) for sub in split_caption_detailed(case["caption"])}
    assert {k: v for k, v in got.items() if v} == case["sublabels"]


@pytest.mark.parametrize(
    "caption",
    [
        "Serum vitamin A concentrations in the two groups.",
        "Patients with type B and type C disease.",
        "Expression of BRCA1 and BRCA2 in the tumours.",
        "HLA-A, HLA-B and HLA-C typing.",
        "Prevalence of hepatitis A and hepatitis B.",
        "Group A and group B at baseline.",
        "Tumour cells with clear cytoplasm (H&E, \u00d7400).",
        "Cells (x10) and nuclei (x40) were counted.",
        "A 60-year-old man. B cells were depleted after rituximab.",
        "Cells were treated at 1, 2 and 3 weeks, a time at which b cells proliferate.",
        "Expression of type I and type II collagen in cells, a process reversed by TGF-beta.",
        "Magnified view of the area in (B).",
        "The A and B alleles in two families.",
    ],
)
def test_false_positive_guard(caption):
    """Captions that only mention letters (genes, vitamins, types, stains, articles) are not compound."""
    assert split_caption(caption) == []


def test_roman_numerals_inside_lettered_panels_stay_in_the_text():
    pairs = dict(split_caption("(A) Controls (i, ii) healthy tissue, (iii) benign lesion. (B) Carcinoma (i) low and (ii) high grade."))
    assert set(pairs) == {"A", "B"}
    assert "(i, ii) healthy tissue, (iii) benign lesion" in pairs["A"]
    assert "(i) low and (ii) high grade" in pairs["B"]


def test_label_closing_a_sentence_takes_that_sentence():
    pairs = dict(split_caption("(A) Frontal view. (B) Lateral view. CT showing the fracture line (C)."))
    assert pairs == {"A": "Frontal view.", "B": "Lateral view.", "C": "CT showing the fracture line."}
    # A label named earlier is a reference, not a new panel.
    pairs = dict(split_caption("(A) Overview. (B) Detail of the area boxed in (A)."))
    assert pairs["A"] == "Overview." and set(pairs) == {"A", "B"}


def test_half_phrase_shares_the_next_phrase():
    pairs = dict(split_caption("(A) Before and (B) after treatment with the drug."))
    assert pairs == {"A": "Before treatment with the drug.", "B": "after treatment with the drug."}


def test_html_and_doubly_escaped_bold_labels():
    jats = "<bold>a</bold> first. <bold>b</bold> second."
    escaped = "&amp;lt;b&amp;gt;a&amp;lt;/b&amp;gt; first. &amp;lt;b&amp;gt;b&amp;lt;/b&amp;gt; second."
    assert split_caption(jats) == [("a", "first."), ("b", "second.")]
    assert split_caption(escaped) == [("a", "first."), ("b", "second.")]


def test_labels_come_back_in_label_order_with_caption_case():
    pairs = split_caption("(b) second panel described first. (a) first panel.")
    assert [label for label, _ in pairs] == ["a", "b"]
