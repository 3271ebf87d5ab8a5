"""JATS figure parsing and licence normalisation, against hand-written expected captions."""

from __future__ import annotations

import pytest

from data.scraper.jats import JatsError, article_figures, article_meta, efetch_error, iter_articles, parse_xml
from data.scraper.licenses import license_allowed, normalize_license, pmc_license_filter
from scrape_fakes import (
    ARTICLE_1001_BODY,
    ARTICLE_1002_BODY,
    ARTICLE_1002_FLOATS,
    EXPECTED_PMC_CAPTIONS,
    articleset,
    jats_article,
)


def _article(xml: str):
    return iter_articles(parse_xml(xml.encode(), "test.xml"))[0]


def test_body_figures_title_paragraphs_inline_markup_and_alternatives():
    article = _article(jats_article("PMC1001", ARTICLE_1001_BODY, pmid="31000001", doi="10.1/x"))
    figures = article_figures(article)
    assert [(f.figure_id, f.label, f.graphic) for f in figures] == [("F1", "Figure 1", "gr1"), ("F2", "Fig. 2", "gr2")]
    assert figures[0].caption == EXPECTED_PMC_CAPTIONS["PMC1001/F1/gr1"]
    assert figures[1].caption == EXPECTED_PMC_CAPTIONS["PMC1001/F2/gr2"]
    # alpha-upper list without <label>: labels generated from the list type
    assert figures[1].subcaptions == [
        {"label": "A", "text": "FLAIR image of the infarct."},
        {"label": "B", "text": "MR angiography of the circle of Willis."},
    ]
    assert figures[0].subcaptions == []


def test_fig_group_members_get_the_group_caption_and_floats_group_is_read():
    article = _article(jats_article("PMC1002", ARTICLE_1002_BODY, new_style_id=False, floats=ARTICLE_1002_FLOATS))
    figures = {f.figure_id: f for f in article_figures(article)}
    assert list(figures) == ["F3a", "F3b", "F4", "F5"]  # the group itself has no graphic: no entry
    assert figures["F3a"].caption == EXPECTED_PMC_CAPTIONS["PMC1002/F3a/fig3a.tif"]
    assert figures["F3b"].caption == EXPECTED_PMC_CAPTIONS["PMC1002/F3b/fig3b.tif"]
    assert (figures["F3a"].group_id, figures["F3a"].group_label, figures["F3a"].label) == ("F3", "Figure 3", "(a)")
    assert figures["F4"].caption == "Histopathology with H&E staining, \u00d7400."
    assert figures["F4"].graphic == "../../../../../tmp/evil"  # parsed as is; refused later
    assert figures["F5"].caption == EXPECTED_PMC_CAPTIONS["PMC1002/F5/fig5"]
    assert [s["label"] for s in figures["F5"].subcaptions] == ["a", "b"]


def test_article_meta_new_and_old_ids_licence_year_title():
    meta = article_meta(
        _article(
            jats_article("PMC1001", "<p/>", title="A <italic>T</italic><sub>2</sub> study", pmid="123", doi="10.1/abc")
        )
    )
    assert (meta.pmcid, meta.pmid, meta.doi, meta.version) == ("PMC1001", "123", "10.1/abc", "1")
    assert meta.title == "A T2 study"  # inline markup glues, no stray spaces
    assert (meta.journal, meta.year, meta.has_body) == ("Radiology Case Reports", "2020", True)
    assert (meta.license, meta.license_url) == ("CC BY", "https://creativecommons.org/licenses/by/4.0/")
    old = article_meta(
        _article(
            jats_article(
                "PMC77",
                "<p/>",
                new_style_id=False,
                license_xml="<license><ali:license_ref>https://creativecommons.org/licenses/by-nc-nd/4.0/</ali:license_ref>"
                "</license>",
            )
        )
    )
    assert (old.pmcid, old.license) == ("PMC77", "CC BY-NC-ND")
    text_only = article_meta(
        _article(
            jats_article(
                "PMC78",
                "<p/>",
                license_xml="<license><license-p>Distributed under the Creative Commons Attribution-"
                "NonCommercial-ShareAlike license.</license-p></license>",
            )
        )
    )
    assert text_only.license == "CC BY-NC-SA"


def test_front_matter_only_article_has_no_body():
    meta = article_meta(_article(jats_article("PMC1003", None)))
    assert meta.pmcid == "PMC1003" and meta.has_body is False


def test_several_graphics_figure_without_graphic_group_with_own_graphic_and_lists():
    body = (
        '<fig id="F1"><label>Figure 1</label><caption><p>Two views.</p></caption>'
        '<graphic xlink:href="f1a"/><graphic xlink:href="f1b"/></fig>'
        '<fig id="F2"><caption><p>Described only.</p></caption></fig>'
        '<fig-group id="G1"><caption><title>Montage</title><p>Whole panel.</p></caption>'
        '<graphic xlink:href="g1"/><fig id="G1a"><caption><p>Part.</p></caption></fig></fig-group>'
        '<fig><caption><p>Lesions: <list list-type="roman-lower"><list-item><p>first;</p></list-item>'
        '<list-item><p>second.</p></list-item></list> A bullet list: <list list-type="bullet"><list-item><p>dot</p>'
        '</list-item></list> and a formula <inline-formula><mml:math alttext="x^2"><mml:msup><mml:mi>x</mml:mi>'
        '<mml:mn>2</mml:mn></mml:msup></mml:math></inline-formula>.</p></caption><graphic xlink:href="f9"/></fig>'
    )
    figures = article_figures(_article(jats_article("PMC5", body)))
    assert [(f.figure_id, f.graphic) for f in figures] == [
        ("F1", "f1a"),
        ("F1", "f1b"),
        ("F2", ""),
        ("G1", "g1"),
        ("G1a", ""),
        ("fig6", "f9"),
    ]
    assert figures[3].caption == "Montage. Whole panel."
    assert figures[4].caption == "Montage. Whole panel. Part."
    assert figures[5].caption == "Lesions: (i) first; (ii) second. A bullet list: dot and a formula x^2."
    assert figures[5].subcaptions == [
        {"label": "i", "text": "first;"},
        {"label": "ii", "text": "second."},
        {"label": "", "text": "dot"},
    ]


def test_articleset_and_error_documents():
    root = parse_xml(articleset([jats_article("PMC1", "<p/>"), jats_article("PMC2", None)]).encode(), "set")
    assert [article_meta(a).pmcid for a in iter_articles(root)] == ["PMC1", "PMC2"]
    error = parse_xml(b"<eFetchResult><ERROR>Empty id list - nothing todo</ERROR></eFetchResult>", "e")
    assert iter_articles(error) == [] and efetch_error(error) == "Empty id list - nothing todo"


def test_malformed_xml_names_the_source_and_entities_are_not_expanded(tmp_path):
    with pytest.raises(JatsError, match="PMC9.xml: malformed XML"):
        parse_xml(b"<article><body><p>unclosed</body></article>", "PMC9.xml")
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    xxe = (
        f'<!DOCTYPE article [<!ENTITY x SYSTEM "file://{secret}">]>'
        '<article xmlns:xlink="http://www.w3.org/1999/xlink"><body><fig id="F1"><caption><p>A &x; B</p></caption>'
        '<graphic xlink:href="g"/></fig></body></article>'
    ).encode()
    figures = article_figures(iter_articles(parse_xml(xxe, "xxe"))[0])
    assert "TOPSECRET" not in figures[0].caption


@pytest.mark.parametrize(
    "raw, code",
    [
        ("https://creativecommons.org/licenses/by/4.0/", "CC BY"),
        ("http://creativecommons.org/licenses/by-nc-sa/3.0/igo/", "CC BY-NC-SA"),
        ("https://creativecommons.org/publicdomain/zero/1.0/", "CC0"),
        ("CC BY-NC-ND", "CC BY-NC-ND"),
        ("cc by 4.0", "CC BY"),
        ("bysa", "CC BY-SA"),
        ("Creative Commons Attribution-NoDerivatives 4.0 International", "CC BY-ND"),
        ("This work is in the public domain", "public domain"),
        ("NO-CC CODE", "other"),
        ("", "unknown"),
        (None, "unknown"),
    ],
)
def test_normalize_license(raw, code):
    assert normalize_license(raw) == code


def test_license_options():
    assert license_allowed("CC BY-NC", "any") and license_allowed("unknown", "any")
    assert license_allowed("CC BY-NC", "cc") and not license_allowed("other", "cc")
    assert license_allowed("CC0", "commercial") and license_allowed("CC BY-ND", "commercial")
    assert not license_allowed("CC BY-NC", "commercial") and not license_allowed("unknown", "commercial")
    assert pmc_license_filter("any") == "open access[filter]"
    assert "cc by license[filter]" in pmc_license_filter("commercial")
    with pytest.raises(ValueError, match="unknown licence option"):
        license_allowed("CC BY", "free")
