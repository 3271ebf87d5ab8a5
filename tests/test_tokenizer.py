"""Tokenizer setup: ids found by token, a tokenizer missing [ENC] is refused with a clear message."""

import pytest
from transformers import AutoTokenizer

from models.tokenizer import (
    DEC_TOKEN,
    ENC_TOKEN,
    TokenizerError,
    load_tokenizer,
    special_token_ids,
    train_wordpiece_tokenizer,
)

CAPTIONS = [
    "axial ct shows a hyperdense lesion in the left frontal lobe",
    "t2 weighted mri with a small hyperintense mass in the right occipital lobe",
    "no focal lesion is seen",
] * 20


def test_trained_tokenizer_roundtrip(tmp_path):
    tok = train_wordpiece_tokenizer(CAPTIONS, tmp_path / "tok", vocab_size=150)
    ids = special_token_ids(tok)
    assert tok.convert_ids_to_tokens([ids.bos, ids.enc, ids.pad]) == [DEC_TOKEN, ENC_TOKEN, "[PAD]"]
    loaded = load_tokenizer(tmp_path / "tok")
    assert special_token_ids(loaded) == ids
    enc = loaded("Left frontal lesion")
    assert enc.input_ids[0] == ids.cls and enc.input_ids[-1] == ids.sep
    assert loaded.decode(enc.input_ids, skip_special_tokens=True) == "left frontal lesion"


def test_tokens_appended_to_plain_bert_vocab(tmp_path):
    # A BERT tokenizer without [DEC]/[ENC] (like bert-base-uncased): both get appended.
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import BertTokenizerFast

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "lesion", "left"])}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer()
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    BertTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                      sep_token="[SEP]", mask_token="[MASK]").save_pretrained(tmp_path / "plain")
    with pytest.raises(TokenizerError, match=r"\[DEC\].*\[ENC\]|lacks"):
        load_tokenizer(tmp_path / "plain", add_special_tokens=False)
    tok = load_tokenizer(tmp_path / "plain")
    ids = special_token_ids(tok)
    assert (ids.bos, ids.enc, ids.vocab_size) == (7, 8, 9)  # like BLIP: 30522, 30523, 30524


def test_missing_enc_is_named(tmp_path):
    tok = train_wordpiece_tokenizer(CAPTIONS, tmp_path / "tok", vocab_size=150)
    plain = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert special_token_ids(plain).enc == tok.convert_tokens_to_ids(ENC_TOKEN)
    with pytest.raises(TokenizerError, match="not found: no such file or folder"):
        load_tokenizer(tmp_path / "does-not-exist")


def test_model_refuses_tokenizer_without_enc(tmp_path):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import BertTokenizerFast

    from models import build_model
    from tests.conftest import tiny_model_config

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "lesion"])}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer()
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok = BertTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]")
    with pytest.raises(TokenizerError, match=r"lacks .*enc \(\[ENC\]\)"):
        build_model("pretrain", tiny_model_config(), tokenizer=tok)
