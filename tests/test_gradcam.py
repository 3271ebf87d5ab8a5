"""Grad-CAM maths: a hand-computed case, transformers' BLIP as a second implementation, invariances."""

import numpy as np
import pytest
import torch
from transformers import BlipForImageTextRetrieval

from models import build_from_checkpoint, build_model
from models.gradcam import (GradCamError, compute_gradcam, compute_gradcams, default_layer, gradcam_from_attention,
                            upsample_map)
from models.med import set_attention_impl
from tests.conftest import TEST_CAPTIONS, hf_blip_config, tiny_model_config
from tests.vis_helpers import randomize_

CAPTION = "axial ct shows a hyperdense lesion in the left frontal lobe"


def assert_maps_close(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal up to float32 rounding (1e-5 of the largest value; kernels sum in different orders)."""
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5 * float(np.abs(expected).max()))


@pytest.fixture
def model(tokenizer):
    torch.manual_seed(0)
    built = build_model("retrieval", tiny_model_config(med_config=dict(tiny_model_config()["med_config"],
                                                                        num_hidden_layers=3)), tokenizer=tokenizer)
    randomize_(built, seed=3)
    return built.eval()


@pytest.fixture
def image():
    return torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_formula_on_a_hand_computed_case():
    # 2 heads, 1 text token, [CLS] + 4 patches on a 2 x 2 grid.
    attention = torch.tensor([[[0.2, 0.1, 0.3, 0.4, 0.0]],
                              [[0.0, 0.5, 0.1, 0.2, 0.2]]])
    gradients = torch.tensor([[[9.0, 2.0, -1.0, 0.5, 3.0]],
                              [[9.0, -4.0, 1.0, 2.0, 1.0]]])
    # head 0: patches 0.1*2, 0.3*0, 0.4*0.5, 0*3 = [0.2, 0, 0.2, 0]
    # head 1: 0.5*0, 0.1*1, 0.2*2, 0.2*1    = [0, 0.1, 0.4, 0.2]
    expected = torch.tensor([[[0.1, 0.05], [0.3, 0.1]]])
    cam = gradcam_from_attention(attention, gradients, (2, 2))
    assert torch.allclose(cam, expected)
    with pytest.raises(ValueError, match="do not fill a 3 x 3 grid"):
        gradcam_from_attention(attention, gradients, (3, 3))


def test_token_maps_equal_transformers_blip_gradcam(tokenizer, tmp_path, image):
    """The same weights in transformers' BLIP (an independent implementation): its cross-attention
    probabilities and their gradient w.r.t. the ITM match logit give the same maps."""
    hf = BlipForImageTextRetrieval(hf_blip_config(len(tokenizer))).eval()
    randomize_(hf, seed=5)
    hf.save_pretrained(tmp_path / "hf")
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    # transformers' files carry no training config: the model keys come from the user (vis.py --config)
    ours = build_from_checkpoint(tmp_path / "hf", "retrieval", config=tiny_model_config(tokenizer=str(tmp_path / "tokenizer")))
    report = ours.init_reports[-1]
    assert report.format == "transformers" and report.clean
    layer = 0
    cam = compute_gradcam(ours, image, CAPTION, layer)

    enc = tokenizer([CAPTION], return_tensors="pt")
    ids = enc.input_ids.clone()
    ids[:, 0] = tokenizer.convert_tokens_to_ids("[ENC]")
    embeds = hf.vision_model(pixel_values=image[None]).last_hidden_state
    out = hf.text_encoder(input_ids=ids, attention_mask=enc.attention_mask, encoder_hidden_states=embeds,
                          output_attentions=True, return_dict=True)
    score = hf.itm_head(out.last_hidden_state[:, 0])[:, 1].sum()
    probs = out.cross_attentions[layer]
    (grads,) = torch.autograd.grad(score, probs)
    # ALBEF's notebook arithmetic, written out: drop [CLS], keep positive gradients, mean over heads
    expected = (probs[0, :, :, 1:] * grads[0, :, :, 1:].clamp(min=0)).mean(0).reshape(-1, 4, 4).detach().numpy()
    assert expected.max() > 1e-4  # a non-trivial case
    assert_maps_close(cam.token_maps, expected)
    with torch.no_grad():
        assert abs(cam.itm_probability - float(hf.itm_head(out.last_hidden_state[:, 0]).softmax(-1)[0, 1])) < 1e-5


def test_maps_are_finite_and_shaped_like_the_grid_and_the_image(model, image):
    cam = compute_gradcam(model, image, CAPTION, 1)
    assert cam.words == CAPTION.split()
    assert cam.word_maps.shape == (len(cam.words), 4, 4) and cam.caption_map.shape == (4, 4)
    assert np.isfinite(cam.stacked()).all() and (cam.stacked() >= 0).all() and cam.caption_map.max() > 0
    assert 0.0 < cam.itm_probability < 1.0
    # an overlay on a 300 x 170 (width x height) original: the map takes the image's own size
    big = upsample_map(cam.word_maps, (170, 300))
    assert big.shape == (len(cam.words), 170, 300) and np.isfinite(big).all()


def test_upsampled_peak_stays_in_its_cell_on_a_non_square_image():
    grid = np.zeros((3, 4), dtype=np.float32)
    grid[2, 1] = 1.0  # bottom row, second column
    big = upsample_map(grid, (90, 200))  # cells of 30 x 50 px
    y, x = np.unravel_index(np.argmax(big), big.shape)
    assert 60 <= y < 90 and 50 <= x < 100


def test_word_map_is_the_mean_of_its_pieces_and_caption_map_the_mean_of_all_tokens(model, image):
    cam = compute_gradcam(model, image, CAPTION, 1)
    assert cam.tokens[0] == "[ENC]" and cam.tokens[-1] == "[SEP]"
    groups: list[list[int]] = []  # the caption has no punctuation: a word is a piece plus its ## continuations
    for t, token in enumerate(cam.tokens[1:-1], start=1):
        if token.startswith("##"):
            groups[-1].append(t)
        else:
            groups.append([t])
    assert len(groups) == len(cam.words) and max(len(g) for g in groups) > 1
    for word_map, group in zip(cam.word_maps, groups):
        np.testing.assert_allclose(word_map, cam.token_maps[group].mean(0), rtol=1e-6)
    np.testing.assert_allclose(cam.caption_map, cam.token_maps.mean(0), rtol=1e-6)


def test_map_changes_when_a_caption_word_changes(model, image):
    left = compute_gradcam(model, image, CAPTION, 1)
    right = compute_gradcam(model, image, CAPTION.replace("left", "right"), 1)
    k = left.words.index("left")
    assert right.words[k] == "right"
    assert not np.allclose(left.word_maps[k], right.word_maps[k], rtol=1e-3)
    assert not np.allclose(left.caption_map, right.caption_map, rtol=1e-3)


def test_maps_identical_with_sdpa_or_eager_for_the_rest_of_the_model(model, image):
    fused = compute_gradcam(model, image, CAPTION, 1)
    set_attention_impl(model, "eager")  # text and ViT attention
    eager = compute_gradcam(model, image, CAPTION, 1)
    assert_maps_close(fused.token_maps, eager.token_maps)
    assert abs(fused.itm_probability - eager.itm_probability) < 1e-6


def test_a_batch_of_captions_equals_one_at_a_time(model, image):
    captions = [CAPTION, "no focal lesion", TEST_CAPTIONS[1]]
    batch = compute_gradcams(model, image, captions, 1)
    for caption, cam in zip(captions, batch):
        alone = compute_gradcam(model, image, caption, 1)
        assert cam.words == alone.words and cam.tokens == alone.tokens
        assert_maps_close(cam.token_maps, alone.token_maps)


def test_last_layer_words_get_no_gradient(model, image):
    """Only [ENC] reaches the ITM head from the last layer: a property of the method the default layer avoids."""
    cam = compute_gradcam(model, image, CAPTION, 2)
    assert np.abs(cam.word_maps).max() == 0.0 and cam.token_maps[0].max() > 0
    assert default_layer(3) == 1 and default_layer(12) == 8 and default_layer(1) == 0


def test_model_state_is_left_as_it_was(model, image):
    compute_gradcam(model, image, CAPTION, 1)
    module = model.text_encoder.encoder.layer[1].crossattention.self
    assert not module.save_attention and module.attention_map is None
    assert all(p.grad is None for p in model.parameters())


def test_truncated_words_are_reported(model, image):
    long_caption = " ".join(["lesion"] * 60)
    cam = compute_gradcam(model, image, long_caption, 1)
    assert len(cam.words) == model.max_length - 2 and len(cam.dropped_words) == 60 - len(cam.words)


@pytest.mark.parametrize("caption, layer, message", [
    ("", 1, "empty"), ("   ", 1, "empty"), (CAPTION, 3, "out of range: the fusion encoder has 3 layers"),
    (CAPTION, -1, "out of range"),
])
def test_bad_requests_are_clear_errors(model, image, caption, layer, message):
    with pytest.raises(GradCamError, match=message):
        compute_gradcam(model, image, caption, layer)
