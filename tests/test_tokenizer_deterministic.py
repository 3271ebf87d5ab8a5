"""train_wordpiece_tokenizer(deterministic=True): reproducible bytes, whole words by frequency, character fallback."""

from models.tokenizer import load_tokenizer, special_token_ids, train_wordpiece_tokenizer

TEXTS = ["Axial CT shows a hyperdense lesion.", "T2 MRI: a hyperintense lesion, left frontal lobe."] * 3 + [
    "rare words appear once"
]


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_same_texts_give_identical_files(tmp_path):
    train_wordpiece_tokenizer(TEXTS, tmp_path / "a", deterministic=True)
    train_wordpiece_tokenizer(TEXTS, tmp_path / "b", deterministic=True)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_whole_words_and_character_fallback(tmp_path):
    train_wordpiece_tokenizer(TEXTS, tmp_path / "tok", deterministic=True)
    tok = load_tokenizer(tmp_path / "tok")
    special_token_ids(tok)
    assert tok.tokenize("Hyperintense lesion, left frontal") == ["hyperintense", "lesion", ",", "left", "frontal"]
    # An unseen word made of seen characters is spelled out, not [UNK].
    assert tok.tokenize("sonal") == ["s", "##o", "##n", "##a", "##l"]
    assert tok.unk_token_id not in tok("T2 CT sonal").input_ids


def test_vocab_size_keeps_the_most_frequent_words(tmp_path):
    full = train_wordpiece_tokenizer(TEXTS, tmp_path / "full", deterministic=True)
    chars_only = len(full) - len({w for w in full.get_vocab() if len(w) > 1 and not w.startswith(("##", "["))})
    small = train_wordpiece_tokenizer(TEXTS, tmp_path / "small", vocab_size=chars_only + 2, deterministic=True)
    vocab = small.get_vocab()
    # Room for two words: "lesion" (6x), then "axial" (first of the 3x words by spelling).
    assert "lesion" in vocab and "axial" in vocab and "frontal" not in vocab
    assert "rare" not in vocab and small.tokenize("rare") == ["r", "##a", "##r", "##e"]


def test_min_frequency_drops_rare_words(tmp_path):
    tok = train_wordpiece_tokenizer(TEXTS, tmp_path / "tok", min_frequency=2, deterministic=True)
    assert "lesion" in tok.get_vocab() and "rare" not in tok.get_vocab()
