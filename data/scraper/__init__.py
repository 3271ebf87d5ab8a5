"""PubMed Central / Open-i figure scraper behind ``scrape.py``.

Modules, one concept each: ``http`` (polite shared client), ``eutils``,
``pmc_search`` (ESearch past its 10,000-record window, by date),
``openi``, ``jats`` (figure parsing), ``oa_bucket`` (the PMC Cloud Service
bucket, where images live), ``oa_package`` (the legacy OA-package route,
used only where it still works), ``download`` (verify, name, order),
``manifest`` (resumable state), ``sources`` (pmc / openi / local),
``splits`` (training lists), ``pipeline`` (the steps), ``licenses``.
"""
