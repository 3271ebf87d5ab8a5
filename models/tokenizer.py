"""The one tokenizer setup: a WordPiece (BERT-style) tokenizer plus BLIP's ``[DEC]``/``[ENC]``.

BLIP appended ``[DEC]`` (bos, decoder start) and ``[ENC]`` (ITM start) to
bert-base-uncased and read the ``[ENC]`` id as ``additional_special_tokens_ids[0]``,
which transformers 5 removed. Here every id is looked up by its token string
and validated, so any WordPiece vocabulary works: bert-base-uncased,
BiomedBERT, or one trained on your own captions with
:func:`train_wordpiece_tokenizer`.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from transformers import AutoTokenizer, BertTokenizerFast, PreTrainedTokenizerBase

from models.sources import resolve_source
from utils.atomic import atomic_directory
from utils.errors import TokenizerError

__all__ = [
    "DEC_TOKEN",
    "ENC_TOKEN",
    "TokenizerError",
    "TokenizerReport",
    "SpecialTokenIds",
    "load_tokenizer",
    "add_blip_special_tokens",
    "special_token_ids",
    "train_wordpiece_tokenizer",
    "tokenizer_report",
    "read_captions",
]

DEC_TOKEN = "[DEC]"
ENC_TOKEN = "[ENC]"


@dataclass(frozen=True)
class SpecialTokenIds:
    """Ids the models need, found by token string."""

    pad: int
    cls: int
    sep: int
    bos: int  # [DEC]: first token of decoder inputs
    enc: int  # [ENC]: replaces [CLS] for image-grounded (ITM) encoding
    vocab_size: int  # len(tokenizer): the embedding table must be at least this big


def add_blip_special_tokens(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Add ``[DEC]`` as bos token and ``[ENC]`` as a special token, if absent. Idempotent."""
    if tokenizer.bos_token != DEC_TOKEN:
        tokenizer.add_special_tokens({"bos_token": DEC_TOKEN})
    if _token_id(tokenizer, ENC_TOKEN) is None:
        tokenizer.add_tokens([ENC_TOKEN], special_tokens=True)
    return tokenizer


def _token_id(tokenizer: PreTrainedTokenizerBase, token: str | None) -> int | None:
    if token is None:
        return None
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None:
        return None
    if tokenizer.unk_token_id is not None and token_id == tokenizer.unk_token_id and token != tokenizer.unk_token:
        return None
    return int(token_id)


def special_token_ids(tokenizer: PreTrainedTokenizerBase) -> SpecialTokenIds:
    """Validate and return the special ids; raises :class:`TokenizerError` naming what is missing."""
    wanted = {
        "pad": tokenizer.pad_token,
        "cls": tokenizer.cls_token,
        "sep": tokenizer.sep_token,
        "bos": DEC_TOKEN,
        "enc": ENC_TOKEN,
    }
    ids: dict[str, int] = {}
    missing = []
    for role, token in wanted.items():
        token_id = _token_id(tokenizer, token)
        if token_id is None:
            missing.append(f"{role} ({token or 'not set'})")
        else:
            ids[role] = token_id
    if missing:
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise TokenizerError(
            f"tokenizer {name!r} lacks {', '.join(missing)}; BLIP needs [PAD], [CLS], [SEP], "
            f"{DEC_TOKEN} and {ENC_TOKEN}. Load it with models.tokenizer.load_tokenizer() "
            "(which adds [DEC]/[ENC]) or call add_blip_special_tokens()."
        )
    return SpecialTokenIds(vocab_size=len(tokenizer), **ids)


def load_tokenizer(name_or_path: str | Path, add_special_tokens: bool = True) -> PreTrainedTokenizerBase:
    """Load a tokenizer from a local directory or a hub name and make it BLIP-ready.

    A folder with only ``vocab.txt`` and a BERT ``config.json`` (BiomedBERT's
    layout on the hub) loads as a BERT WordPiece tokenizer. Missing paths and an
    unreachable hub fail at once (:func:`models.sources.resolve_source`).

    With ``add_special_tokens=False`` the tokenizer is only validated, so a
    tokenizer saved without ``[ENC]`` fails here with a clear message.
    """
    source = resolve_source(name_or_path, what="tokenizer", error=TokenizerError)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source))
    except (OSError, ValueError) as exc:
        raise TokenizerError(f"cannot load tokenizer from {str(name_or_path)!r}: {exc}") from exc
    if add_special_tokens:
        add_blip_special_tokens(tokenizer)
    special_token_ids(tokenizer)
    return tokenizer


def train_wordpiece_tokenizer(
    texts: Iterable[str],
    out_dir: str | Path,
    vocab_size: int = 2000,
    lowercase: bool = True,
    min_frequency: int = 1,
    show_progress: bool = True,
    deterministic: bool = False,
) -> PreTrainedTokenizerBase:
    """Train a BERT-style WordPiece tokenizer on ``texts``, save it to ``out_dir`` and return it.

    The saved directory loads with :func:`load_tokenizer` (and plain
    ``AutoTokenizer``); ``[DEC]``/``[ENC]`` are already in the vocabulary.

    ``deterministic=True`` builds a word-level WordPiece vocabulary instead of
    running the subword trainer: special tokens, every character (plain and
    ``##``-prefixed) and then whole words by descending frequency (ties by
    spelling) up to ``vocab_size``. Same texts -> byte-identical files. The
    tokenizers trainer is not reproducible (hash-map order decides merge ties,
    huggingface/tokenizers#1794); use this for small closed vocabularies such
    as the phantom captions, where every word fits as one token.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", DEC_TOKEN, ENC_TOKEN]
    normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=None if lowercase else False)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    if deterministic:
        vocab = _word_level_vocab(texts, normalizer, pre_tokenizer, specials, vocab_size, min_frequency)
        backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
        backend.add_special_tokens(specials)
    else:
        backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizer
    backend.pre_tokenizer = pre_tokenizer
    if not deterministic:
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials, show_progress=show_progress
        )
        backend.train_from_iterator(texts, trainer)
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    backend.decoder = decoders.WordPiece()
    tokenizer = BertTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        do_lower_case=lowercase,
    )
    add_blip_special_tokens(tokenizer)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out))
    return tokenizer


def _word_level_vocab(texts, normalizer, pre_tokenizer, specials, vocab_size, min_frequency) -> dict[str, int]:
    """Specials, all characters (plain and ``##``), then whole words by (-count, word): a reproducible vocabulary."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted({char for word in counts for char in word})
    tokens = list(specials) + chars + [f"##{char}" for char in chars]
    taken = set(tokens)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    words = [word for word, count in ranked if count >= min_frequency and word not in taken]
    tokens += words[: max(0, vocab_size - len(tokens))]
    return {token: index for index, token in enumerate(tokens)}


# ----- does a tokenizer fit the captions? -------------------------------------------------

# Warn above these shares (see docs/tokenizer.md for the measurements behind them).
MAX_UNKNOWN_WORDS = 0.01
MAX_FRAGMENTED_WORDS = 0.05
MAX_TRUNCATED_CAPTIONS = 0.10


@dataclass(frozen=True)
class TokenizerReport:
    """How a tokenizer cuts a sample of captions.

    Words are the tokenizer's own pre-tokenized words (BERT: split at spaces
    and punctuation). A word is *unknown* when one of its pieces is
    ``[UNK]``, *fragmented* when it is made of letters only, has at least 4 of
    them and more pieces than half its length (``y ##e ##a ##r``: spelled out,
    not a subword split like ``hyper ##int ##ense``; numbers and codes such as
    ``a549`` are not counted). A caption is *truncated* when it has more
    than ``max_length`` tokens with ``[CLS]``/``[SEP]``.
    """

    captions: int
    words: int
    unknown_words: int
    fragmented_words: int
    truncated_captions: int
    max_length: int
    tokens_median: int
    tokens_p95: int
    tokens_max: int
    top_unknown: tuple[tuple[str, int], ...]
    top_fragmented: tuple[tuple[str, str, int], ...]  # (word, its pieces, count)

    @property
    def unknown_rate(self) -> float:
        return self.unknown_words / max(1, self.words)

    @property
    def fragment_rate(self) -> float:
        return self.fragmented_words / max(1, self.words)

    @property
    def truncated_rate(self) -> float:
        return self.truncated_captions / max(1, self.captions)

    def summary(self) -> str:
        return (
            f"{self.captions} captions, {self.words} words: [UNK] in {self.unknown_rate:.1%} of words, "
            f"{self.fragment_rate:.1%} split into characters; tokens per caption median {self.tokens_median}, "
            f"95th percentile {self.tokens_p95}, max {self.tokens_max}; "
            f"{self.truncated_rate:.1%} cut at max_length {self.max_length}"
        )


def _words(tokenizer: PreTrainedTokenizerBase, text: str) -> list[str]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or backend.pre_tokenizer is None:
        return text.split()
    if backend.normalizer is not None:
        text = backend.normalizer.normalize_str(text)
    return [word for word, _ in backend.pre_tokenizer.pre_tokenize_str(text)]


def _percentile(sorted_values: list[int], q: float) -> int:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))] if sorted_values else 0


def tokenizer_report(
    tokenizer: PreTrainedTokenizerBase,
    captions: Iterable[str],
    max_length: int,
    *,
    max_unknown: float = MAX_UNKNOWN_WORDS,
    max_fragmented: float = MAX_FRAGMENTED_WORDS,
    max_truncated: float = MAX_TRUNCATED_CAPTIONS,
    examples: int = 5,
) -> tuple[TokenizerReport, str | None]:
    """Measure how ``tokenizer`` cuts ``captions`` (as training sees them) and say what to do when it fits badly.

    Returns the report and a warning text, or ``None`` when every share is
    within its limit. Pure: nothing is logged or written; the caller (the
    training engine on a sample of its captions, or ``python -m models.tokenizer
    --check``) decides where the text goes.
    """
    texts = [text for text in captions if text]
    word_counts: Counter[str] = Counter()
    for text in texts:
        word_counts.update(_words(tokenizer, text))
    unknown: Counter[str] = Counter()
    fragmented: dict[str, tuple[str, int]] = {}
    for word, count in word_counts.items():
        pieces = tokenizer.tokenize(word)
        if tokenizer.unk_token is not None and tokenizer.unk_token in pieces:
            unknown[word] = count
        if word.isalpha() and len(word) >= 4 and len(pieces) > len(word) / 2:
            fragmented[word] = (" ".join(pieces), count)
    lengths = sorted(len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]) if texts else []
    top_fragmented = sorted(fragmented.items(), key=lambda item: (-item[1][1], item[0]))[:examples]
    report = TokenizerReport(
        captions=len(texts),
        words=sum(word_counts.values()),
        unknown_words=sum(unknown.values()),
        fragmented_words=sum(count for _, count in fragmented.values()),
        truncated_captions=sum(1 for n in lengths if n > max_length),
        max_length=max_length,
        tokens_median=_percentile(lengths, 0.5),
        tokens_p95=_percentile(lengths, 0.95),
        tokens_max=lengths[-1] if lengths else 0,
        top_unknown=tuple(sorted(unknown.items(), key=lambda item: (-item[1], item[0]))[:examples]),
        top_fragmented=tuple((word, pieces, count) for word, (pieces, count) in top_fragmented),
    )
    problems = []
    if report.unknown_rate > max_unknown:
        shown = ", ".join(f"{word!r} ({count})" for word, count in report.top_unknown)
        problems.append(f"  [UNK] in {report.unknown_rate:.1%} of words (limit {max_unknown:.0%}), e.g. {shown}")
    if report.fragment_rate > max_fragmented:
        shown = ", ".join(f"{word!r} -> {pieces} ({count})" for word, pieces, count in report.top_fragmented)
        problems.append(f"  {report.fragment_rate:.1%} of words split into characters (limit {max_fragmented:.0%}), "
                        f"e.g. {shown}")
    if report.truncated_rate > max_truncated:
        problems.append(f"  {report.truncated_rate:.1%} of captions cut at max_length {max_length} tokens "
                        f"(limit {max_truncated:.0%}); tokens per caption: median {report.tokens_median}, "
                        f"95th percentile {report.tokens_p95}, max {report.tokens_max}")
    if not problems:
        return report, None
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    advice = []
    if report.unknown_rate > max_unknown or report.fragment_rate > max_fragmented:
        advice.append("train a tokenizer on your captions (python -m models.tokenizer --train LIST.json ... "
                      "--out DIR, then tokenizer: DIR) or use a biomedical BERT vocabulary (BiomedBERT)")
    if report.truncated_rate > max_truncated:
        advice.append(f"raise max_length (at least {report.tokens_p95} keeps 95% of captions whole)")
    return report, (f"tokenizer {name!r} fits these {report.captions} captions badly:\n" + "\n".join(problems)
                    + "\n  what to do: " + "; or ".join(advice))


# ----- command line -----------------------------------------------------------------------

def read_captions(files: Sequence[str | Path], max_words: int = 0) -> tuple[list[str], int]:
    """Cleaned captions of BLIP JSON lists (``caption``: a string, or a list as in retrieval files).

    Returns ``(captions, skipped records)``; records without a usable caption are
    skipped and counted, as training does. ``max_words`` 0 keeps every word.
    """
    from data.captions import pre_caption
    from utils.json_file import read_json_file

    captions: list[str] = []
    skipped = 0
    for file in files:
        records = read_json_file(file, what="caption list", error=TokenizerError, missing=TokenizerError)
        if not isinstance(records, list):
            raise TokenizerError(f"{file}: expected a JSON list of {{image, caption}} records")
        for record in records:
            raw = record.get("caption") if isinstance(record, dict) else None
            texts = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
            cleaned = [pre_caption(t, max_words) for t in texts if isinstance(t, str)]
            cleaned = [t for t in cleaned if t]
            if not cleaned:
                skipped += 1
            captions.extend(cleaned)
    return captions, skipped


def _train_command(args: argparse.Namespace) -> int:
    out = Path(args.out)
    captions, skipped = read_captions(args.train)
    if not captions:
        raise TokenizerError(f"no captions in {', '.join(args.train)} ({skipped} records without one)")
    try:  # staged beside --out, then renamed: an interrupted run leaves no half tokenizer there
        with atomic_directory(out) as staging:
            tokenizer = train_wordpiece_tokenizer(captions, staging, vocab_size=args.vocab_size,
                                                  min_frequency=args.min_frequency, show_progress=False,
                                                  deterministic=args.deterministic)
    except FileExistsError as exc:
        raise TokenizerError(str(exc)) from None
    print(f"wrote {out}: {len(tokenizer)} tokens from {len(captions)} captions ({skipped} records skipped)")
    report, _ = tokenizer_report(tokenizer, captions, args.max_length)
    print(f"on its training captions: {report.summary()}")
    print(f"use it with: tokenizer: {out}  (and med_config vocab_size: null, or at least {len(tokenizer)})")
    return 0


def _check_command(args: argparse.Namespace) -> int:
    captions, skipped = read_captions(args.check, max_words=args.max_words)
    if len(captions) > args.sample:
        captions = random.Random(0).sample(captions, args.sample)
    tokenizer = load_tokenizer(args.tokenizer)
    report, warning = tokenizer_report(tokenizer, captions, args.max_length)
    print(report.summary() + (f" ({skipped} records without a caption skipped)" if skipped else ""))
    if warning:
        print(warning)
        return 1
    print("the tokenizer fits these captions")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.tokenizer",
        description="Train a WordPiece tokenizer on BLIP JSON caption lists, or check how a tokenizer cuts them.",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--train", nargs="+", metavar="LIST.json", help="train on these lists' captions")
    mode.add_argument("--check", nargs="+", metavar="LIST.json", help="report how --tokenizer cuts these captions")
    parser.add_argument("--out", help="--train: new tokenizer folder (must not exist or be empty)")
    parser.add_argument("--vocab_size", type=int, default=30522, help="--train: most tokens, [DEC]/[ENC] included "
                        "(default 30522, BERT's; fewer when the captions have fewer distinct pieces)")
    parser.add_argument("--min_frequency", type=int, default=2, help="--train: rarest piece kept (default 2)")
    parser.add_argument("--deterministic", action="store_true",
                        help="--train: whole-word vocabulary, byte-identical per input (for small closed vocabularies)")
    parser.add_argument("--tokenizer", help="--check: tokenizer folder or hub name")
    parser.add_argument("--max_length", type=int, default=30, help="token limit captions are cut at (default 30)")
    parser.add_argument("--max_words", type=int, default=30, help="--check: pre_caption word limit (default 30)")
    parser.add_argument("--sample", type=int, default=5000, help="--check: captions drawn (default 5000)")
    args = parser.parse_args(argv)
    if args.train and not args.out:
        parser.error("--train needs --out DIR")
    if args.check and not args.tokenizer:
        parser.error("--check needs --tokenizer DIR_OR_NAME")
    try:
        return _train_command(args) if args.train else _check_command(args)
    except TokenizerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
