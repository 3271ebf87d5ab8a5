"""PubMed Central / Open-i figure scraper behind ``scrape.py``.

Modules, one concept each: ``http`` (polite shared client), ``eutils``,
``openi``, ``jats`` (figure parsing), ``oa_bucket`` (where images live),
``download`` (verify, name, order), ``manifest`` (resumable state),
``sources`` (pmc / openi / local), ``splits`` (training lists), ``pipeline``
(the steps), ``licenses``.
"""
