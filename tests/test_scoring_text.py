"""The scoring API sees captions exactly as training does: one cleaning path (pre_caption, max_words, max_length)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from data.captions import pre_caption
from data.pretrain_dataset import PretrainCollator, PretrainDataset
from data.retrieval_dataset import RetrievalEvalDataset
from data.transforms import build_image_transform
from models import build_model, itc_similarity, itm_probability
from tests.conftest import tiny_model_config
from tests.test_blip_equivalence import randomize_

RAW = [
    "<b>Axial CT</b> shows a hyperdense lesion; in the LEFT frontal lobe.",
    "T2 weighted MRI: small hyperintense mass (right occipital lobe)!",
    "No focal lesion&nbsp;is seen on this <i>FLAIR</i> image.",
]
# pre_caption by hand: markup and entities gone, lower case, . ! " ( ) * # : ; ~ -> space, 8 words kept
CLEANED_BY_HAND = [
    "axial ct shows a hyperdense lesion in the",
    "t2 weighted mri small hyperintense mass right occipital",
    "no focal lesion is seen on this flair",
]
MAX_WORDS, MAX_LENGTH = 8, 12


@pytest.fixture(scope="module")
def model(tokenizer):
    model = build_model("retrieval", tiny_model_config(max_words=MAX_WORDS, max_length=MAX_LENGTH),
                        tokenizer=tokenizer).eval()
    randomize_(model, seed=7)
    return model


def test_api_cleans_like_the_training_pipeline(model, tokenizer, tmp_path):
    for i in range(len(RAW)):
        Image.fromarray(np.full((40, 40, 3), 40 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
    records = [{"image": f"{i}.png", "caption": caption} for i, caption in enumerate(RAW)]
    (tmp_path / "train.json").write_text(json.dumps(records))
    dataset = PretrainDataset(tmp_path / "train.json", build_image_transform("test", 32), max_words=MAX_WORDS)
    batch = PretrainCollator(tokenizer, MAX_LENGTH)([dataset[i] for i in range(len(RAW))])

    assert model.clean_captions(RAW) == CLEANED_BY_HAND == batch["caption"]
    ids, atts = model.tokenize(RAW)
    assert torch.equal(ids, batch["text_ids"]) and torch.equal(atts, batch["text_atts"])


def test_raw_and_cleaned_captions_score_the_same(model):
    torch.manual_seed(0)
    images = torch.randn(2, 3, 32, 32)
    assert torch.equal(itc_similarity(model, images, RAW), itc_similarity(model, images, CLEANED_BY_HAND, clean=False))
    assert torch.equal(itm_probability(model, images, RAW),
                       itm_probability(model, images, CLEANED_BY_HAND, clean=False))
    # the opt-out scores the string as given, which is not what training saw
    assert not torch.allclose(itc_similarity(model, images, RAW, clean=False), itc_similarity(model, images, RAW))


def test_evaluation_texts_come_from_the_same_cleaning(model, tmp_path):
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "test.json").write_text(json.dumps([{"image": "a.png", "caption": RAW}]))
    dataset = RetrievalEvalDataset(tmp_path / "test.json", build_image_transform("test", 32), max_words=MAX_WORDS)
    assert dataset.texts == model.clean_captions(RAW)
    assert all(pre_caption(text, MAX_WORDS) == text for text in dataset.texts)  # a second pass changes nothing


def test_bad_caption_input_is_named(model):
    with pytest.raises(ValueError, match=r"caption 1 .* is empty after cleaning"):
        model.tokenize(["left frontal lesion", "<br/> ;;"])
    with pytest.raises(TypeError, match=r"pass \[caption\]"):
        itc_similarity(model, torch.zeros(1, 3, 32, 32), "left frontal lesion")
