"""Does a tokenizer fit the captions? The report, its warning, the training CLI, BiomedBERT's folder layout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from data.captions import pre_caption
from models import build_model
from models.tokenizer import (
    DEC_TOKEN,
    ENC_TOKEN,
    load_tokenizer,
    main,
    special_token_ids,
    tokenizer_report,
    train_wordpiece_tokenizer,
)
from tests.conftest import TEST_CAPTIONS, TINY_TEXT, tiny_model_config
from tests.hub_helpers import write_bert_folder
from tests.subfigure_caption_cases import CASES

REPO_ROOT = Path(__file__).resolve().parents[1]
PUBMED_STYLE = [case["caption"] for case in CASES if case["caption"]]  # hand-written PubMed-style captions (markup, numbers, units)
PUBMED_CLEANED = [pre_caption(caption, 0) for caption in PUBMED_STYLE]  # as training sees them


def _vocab_tokenizer(tokens, tmp_path):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import BertTokenizerFast

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + tokens)}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer()
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    BertTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                      sep_token="[SEP]", mask_token="[MASK]").save_pretrained(tmp_path / "tok")
    return load_tokenizer(tmp_path / "tok")


def test_report_counts_by_hand(tmp_path):
    tok = _vocab_tokenizer(["left", "frontal", "lesion", "y", "##e", "##a", "##r"], tmp_path)
    captions = ["left frontal lesion", "year lesion", "left \u00b5 lesion", ""]
    report, warning = tokenizer_report(tok, captions, max_length=5)
    # words: 3 + 2 + 3 (the empty caption is ignored); "\u00b5" -> [UNK]; "year" -> y ##e ##a ##r (4 pieces > 4/2)
    assert (report.captions, report.words, report.unknown_words, report.fragmented_words) == (3, 8, 1, 1)
    # tokens with [CLS]/[SEP]: 5, 1 + 4 + 1 + 2 = 7, 5 -> one caption over 5
    assert (report.truncated_captions, report.tokens_median, report.tokens_max) == (1, 5, 7)
    assert report.top_unknown == (("\u00b5", 1),)
    assert report.top_fragmented == (("year", "y ##e ##a ##r", 1),)
    assert "[UNK] in 12.5% of words" in warning and "'year' -> y ##e ##a ##r (1)" in warning
    assert "33.3% of captions cut at max_length 5" in warning and "python -m models.tokenizer --train" in warning
    _, quiet = tokenizer_report(tok, captions, max_length=7, max_unknown=0.2, max_fragmented=0.2)
    assert quiet is None


def test_a_fitting_tokenizer_is_quiet_and_a_foreign_one_warns(tmp_path):
    tok = train_wordpiece_tokenizer(TEST_CAPTIONS, tmp_path / "tok", deterministic=True)
    report, warning = tokenizer_report(tok, TEST_CAPTIONS, max_length=30)
    assert warning is None and report.unknown_words == 0 and report.fragmented_words == 0
    report, warning = tokenizer_report(tok, PUBMED_CLEANED, max_length=30)
    assert warning is not None and report.fragment_rate > 0.05 and report.truncated_rate > 0.10


def _write_lists(folder: Path) -> tuple[Path, Path]:
    pretrain = [{"image": f"{i}.png", "caption": c} for i, c in enumerate(PUBMED_STYLE[:60])]
    pretrain.append({"image": "x.png", "caption": None})  # skipped and counted
    retrieval = [{"image": f"r{i}.png", "caption": [c, c.upper()]} for i, c in enumerate(PUBMED_STYLE[60:])]
    (folder / "pretrain.json").write_text(json.dumps(pretrain))
    (folder / "test.json").write_text(json.dumps(retrieval))
    return folder / "pretrain.json", folder / "test.json"


def test_train_cli_writes_a_tokenizer_that_fits(tmp_path, capsys):
    lists = _write_lists(tmp_path)
    out = tmp_path / "my_tokenizer"
    assert main(["--train", *map(str, lists), "--out", str(out), "--vocab_size", "3000", "--min_frequency", "1"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "(1 records skipped)" in printed
    tok = load_tokenizer(out, add_special_tokens=False)  # [DEC]/[ENC] are already in it
    assert tok.convert_ids_to_tokens([special_token_ids(tok).bos, special_token_ids(tok).enc]) == [DEC_TOKEN, ENC_TOKEN]
    report, _ = tokenizer_report(tok, PUBMED_CLEANED, max_length=64)
    assert report.unknown_words == 0 and report.fragment_rate < 0.05
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left
    assert main(["--check", *map(str, lists), "--tokenizer", str(out), "--max_length", "512"]) == 0


def test_train_cli_refuses_to_overwrite_and_names_bad_files(tmp_path, capsys):
    lists = _write_lists(tmp_path)
    out = tmp_path / "taken"
    out.mkdir()
    (out / "vocab.txt").write_text("keep me")
    assert main(["--train", str(lists[0]), "--out", str(out)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err and (out / "vocab.txt").read_text() == "keep me"
    (tmp_path / "bad.json").write_text('[{"caption": "a"},\n  {"caption": }]')
    assert main(["--train", str(tmp_path / "bad.json"), "--out", str(tmp_path / "new")]) == 2
    assert f"{tmp_path / 'bad.json'}:2:" in capsys.readouterr().err and not (tmp_path / "new").exists()


def test_check_cli_warns_for_a_foreign_tokenizer(tmp_path, capsys):
    lists = _write_lists(tmp_path)
    train_wordpiece_tokenizer(TEST_CAPTIONS, tmp_path / "phantom_like", deterministic=True)
    assert main(["--check", *map(str, lists), "--tokenizer", str(tmp_path / "phantom_like")]) == 1
    assert "split into characters" in capsys.readouterr().out


def test_cli_runs_as_documented():
    done = subprocess.run([sys.executable, "-m", "models.tokenizer", "--help"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "--train LIST.json" in done.stdout
    assert "RuntimeWarning" not in done.stderr


@pytest.mark.parametrize("weights, legacy", [("pytorch_model.bin", True), ("model.safetensors", False)])
def test_biomedbert_folder_layout_loads_as_tokenizer_and_text_encoder(tmp_path, weights, legacy):
    words = sorted({w for c in TEST_CAPTIONS for w in c.split()})
    bert = write_bert_folder(tmp_path / "BiomedBERT", words, weights=weights, legacy_layernorm_names=legacy)
    assert sorted(p.name for p in (tmp_path / "BiomedBERT").iterdir()) == sorted(["config.json", "vocab.txt", weights])
    folder = str(tmp_path / "BiomedBERT")
    config = tiny_model_config(tokenizer=folder, text_encoder=folder, med_config=dict(TINY_TEXT, vocab_size=None))
    model = build_model("pretrain", config).eval()
    ids = special_token_ids(model.tokenizer)
    vocab_size = len(words) + 5
    assert (ids.bos, ids.enc, ids.vocab_size) == (vocab_size, vocab_size + 1, vocab_size + 2)  # appended, as BLIP
    assert model.tokenizer.tokenize("Left FRONTAL lesion") == ["left", "frontal", "lesion"]  # uncased, from config
    assert all(not report.shape_mismatch and not report.unexpected for report in model.init_reports)
    text_ids, text_atts = model.tokenize(["axial ct shows a hyperdense lesion", "no focal lesion"])
    with torch.no_grad():
        expected = bert.bert(input_ids=text_ids, attention_mask=text_atts).last_hidden_state
        ours = model.encode_text(text_ids, text_atts)
    assert (expected - ours)[text_atts.bool()].abs().max() <= 1e-5
