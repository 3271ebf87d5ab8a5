"""The one tokenizer setup: a WordPiece (BERT-style) tokenizer plus BLIP's ``[DEC]``/``[ENC]``.

BLIP appended ``[DEC]`` (bos, decoder start) and ``[ENC]`` (ITM start) to
bert-base-uncased and read the ``[ENC]`` id as ``additional_special_tokens_ids[0]``,
which transformers 5 removed. Here every id is looked up by its token string
and validated, so any WordPiece vocabulary works: bert-base-uncased,
BiomedBERT, or one trained on your own captions with
:func:`train_wordpiece_tokenizer`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from transformers import AutoTokenizer, BertTokenizerFast, PreTrainedTokenizerBase

from models.sources import resolve_source
from utils.errors import TokenizerError

__all__ = [
    "DEC_TOKEN",
    "ENC_TOKEN",
    "TokenizerError",
    "SpecialTokenIds",
    "load_tokenizer",
    "add_blip_special_tokens",
    "special_token_ids",
    "train_wordpiece_tokenizer",
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
