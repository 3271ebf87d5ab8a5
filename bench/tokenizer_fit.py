"""How well tokenizers fit caption sets: the figures behind models.tokenizer's warning limits.

    python bench/tokenizer_fit.py [--phantom data/phantom_data]

Caption sets: the phantom train/test captions and the hand-written PubMed-style
captions of tests/subfigure_caption_cases.py ("dev" cases vs the held-out ones),
all cleaned with pre_caption as training does. Tokenizers: the demo's phantom
tokenizer, and one trained with ``python -m models.tokenizer --train``'s code on
the PubMed-style dev captions only (so the held-out rows are unseen text). Prints
a markdown table and writes it to docs/benchmarks/tokenizer_fit.md.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import publish  # noqa: E402
from data.captions import pre_caption  # noqa: E402
from models.tokenizer import (  # noqa: E402
    MAX_FRAGMENTED_WORDS,
    MAX_TRUNCATED_CAPTIONS,
    MAX_UNKNOWN_WORDS,
    load_tokenizer,
    read_captions,
    tokenizer_report,
    train_wordpiece_tokenizer,
)
from tests.subfigure_caption_cases import CASES  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phantom", default=str(ROOT / "data/phantom_data"), help="phantom dataset folder")
    parser.add_argument("--max_words", type=int, default=60, help="pre_caption word limit (the demo's 60)")
    parser.add_argument("--out", default=str(ROOT / "docs/benchmarks/tokenizer_fit.md"))
    args = parser.parse_args()
    phantom = Path(args.phantom)
    if not (phantom / "tokenizer").is_dir():
        print(f"{phantom}: no phantom dataset; run python -m data.phantom --out {phantom}", file=sys.stderr)
        return 2

    sets = {
        "phantom train": read_captions([phantom / "pretrain.json"], args.max_words)[0],
        "phantom test": read_captions([phantom / "retrieval_test.json"], args.max_words)[0],
        "PubMed-style dev": [pre_caption(c["caption"], args.max_words) for c in CASES
                             if c["split"] == "dev" and c["caption"]],
        "PubMed-style held-out": [pre_caption(c["caption"], args.max_words) for c in CASES
                                  if c["split"] != "dev" and c["caption"]],
    }
    with tempfile.TemporaryDirectory() as tmp:
        tokenizers = {
            "phantom (demo)": load_tokenizer(phantom / "tokenizer"),
            "trained on PubMed-style dev": train_wordpiece_tokenizer(
                sets["PubMed-style dev"], Path(tmp) / "dev", vocab_size=30522, min_frequency=2, show_progress=False),
        }
        lines = [
            f"# Tokenizer fit ({datetime.date.today().isoformat()}, `python bench/tokenizer_fit.py`)",
            "",
            f"Warning limits (models/tokenizer.py, set before this table was first made and not changed since): "
            f"[UNK] words > {MAX_UNKNOWN_WORDS:.0%}, words split into characters > {MAX_FRAGMENTED_WORDS:.0%}, "
            f"captions cut at max_length > {MAX_TRUNCATED_CAPTIONS:.0%}. After the first run, words with digits left "
            "the character-split count (numbers and codes such as 2010 or a549 split in any vocabulary). Captions "
            f"cleaned with pre_caption(max_words={args.max_words}). No real PubMed captions or BERT vocabularies are "
            "reachable from this sandbox: the PubMed-style rows are the closest stand-in, hand-written.",
            "",
            "| tokenizer | captions | n | [UNK] words | split into characters | cut at 30 tokens | cut at 64 tokens "
            "| tokens median / p95 | warns at max_length 64 |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for tok_name, tok in tokenizers.items():
            for set_name, captions in sets.items():
                report30, _ = tokenizer_report(tok, captions, max_length=30)
                report64, warning = tokenizer_report(tok, captions, max_length=64)
                examples = ", ".join(f"{w} -> {p}" for w, p, _ in report64.top_fragmented[:2])
                lines.append(
                    f"| {tok_name} | {set_name} | {report64.captions} | {report64.unknown_rate:.1%} "
                    f"| {report64.fragment_rate:.1%}{f' ({examples})' if examples else ''} "
                    f"| {report30.truncated_rate:.1%} | {report64.truncated_rate:.1%} "
                    f"| {report64.tokens_median} / {report64.tokens_p95} | {'yes' if warning else 'no'} |"
                )
    text = "\n".join(lines) + "\n"
    publish(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
