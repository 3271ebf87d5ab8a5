"""BLIP pretrain/retrieval models: loss wiring, training steps, BLIP's crash cases, weight sharing, momentum."""

import math

import pytest
import torch

from models import build_model
from models.med import lm_loss
from tests.conftest import TEST_CAPTIONS, tiny_model_config

CAPTIONS = [TEST_CAPTIONS[0], TEST_CAPTIONS[1], TEST_CAPTIONS[2], TEST_CAPTIONS[3]]


def make_batch(model, n=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, 32, 32, generator=gen)
    ids, atts = model.tokenize(CAPTIONS[:n] if n <= 4 else (CAPTIONS * n)[:n])
    return images, ids, atts


@pytest.fixture
def pretrain(tokenizer):
    torch.manual_seed(0)
    return build_model("pretrain", tiny_model_config(), tokenizer=tokenizer)


def test_itc_loss_matches_independent_recomputation(pretrain):
    images, ids, atts = make_batch(pretrain)
    queue_img, queue_txt = pretrain.image_queue.clone(), pretrain.text_queue.clone()
    with torch.no_grad():
        image_feat = pretrain.image_features(pretrain.encode_image(images))
        text_feat = pretrain.text_features(pretrain.encode_text(ids, atts))
        out = pretrain(images, ids, atts, alpha=0.4)
    temp = pretrain.temp.item()
    # momentum copies equal the online weights at start, so momentum features = online features
    sim_i2t = image_feat @ torch.cat([text_feat.t(), queue_txt], 1) / temp
    sim_t2i = text_feat @ torch.cat([image_feat.t(), queue_img], 1) / temp
    onehot = torch.zeros_like(sim_i2t)
    onehot[:, :4] = torch.eye(4)
    loss = 0.0
    for sim in (sim_i2t, sim_t2i):
        targets = 0.4 * sim.softmax(1) + 0.6 * onehot
        loss += -(sim.log_softmax(1) * targets).sum(1).mean() / 2
    assert out["loss_ita"].item() == pytest.approx(loss.item(), abs=1e-5)
    # the momentum features were enqueued at the old pointer
    assert torch.allclose(pretrain.image_queue[:, :4].t(), image_feat, atol=1e-6)
    assert pretrain.queue_ptr.item() == 4


def test_itm_label_layout(pretrain):
    images, ids, atts = make_batch(pretrain)
    with torch.no_grad():
        pretrain.itm_head.weight.zero_()
        pretrain.itm_head.bias.copy_(torch.tensor([0.0, math.log(3)]))
        out = pretrain(images, ids, atts, alpha=0.4)
    # B positives (label 1, p=.75) and 2B negatives (label 0, p=.25)
    assert out["loss_itm"].item() == pytest.approx((-math.log(0.75) + 2 * -math.log(0.25)) / 3, abs=1e-5)


def test_lm_loss_uses_dec_token_and_ignores_padding(pretrain):
    images, ids, atts = make_batch(pretrain, n=2)
    assert (atts == 0).any()  # captions of different lengths: padding present
    with torch.no_grad():
        out = pretrain(images, ids, atts, alpha=0.4)
        image_embeds = pretrain.encode_image(images)
        total, count = 0.0, 0
        for row in range(2):  # each caption alone, no padding at all
            length = int(atts[row].sum())
            dec = ids[row : row + 1, :length].clone()
            dec[:, 0] = pretrain.special_tokens.bos
            logits = pretrain.text_decoder(dec, encoder_hidden_states=image_embeds[row : row + 1]).logits
            total += lm_loss(logits, dec, 0.1, reduction="none").item()
            count += length - 1
    assert out["loss_lm"].item() == pytest.approx(total / count, abs=1e-5)


def _step_lowers_losses(model, forward):
    """One AdamW step on a batch lowers each loss on that batch (queues/momentum restored between)."""
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    before = forward()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3, weight_decay=0.0)
    optimizer.zero_grad()
    sum(before.values()).backward()
    optimizer.step()
    with torch.no_grad():  # put back queues, pointers and momentum copies; keep the updated online weights
        for key, value in model.state_dict().items():
            if "queue" in key or "_m." in key or "ptr" in key:
                value.copy_(state[key])
    torch.manual_seed(1)  # same hard negatives
    after = forward()
    for name in before:
        assert after[name].item() < before[name].item(), (name, before[name].item(), after[name].item())


def test_training_step_lowers_each_pretrain_loss(pretrain):
    images, ids, atts = make_batch(pretrain)
    _step_lowers_losses(pretrain, lambda: pretrain(images, ids, atts, alpha=0.4))


def test_training_step_lowers_each_retrieval_loss(tokenizer):
    torch.manual_seed(0)
    model = build_model("retrieval", tiny_model_config(), tokenizer=tokenizer)
    images, ids, atts = make_batch(model)
    idx = torch.tensor([0, 1, 2, 2])  # two captions of one image
    _step_lowers_losses(model, lambda: model(images, ids, atts, alpha=0.4, idx=idx))


@pytest.mark.parametrize("kind", ["pretrain", "retrieval"])
def test_batch_of_one_and_odd_queue_sizes(kind, tokenizer):
    """BLIP crashed on batch size 1 (#76) and on queue_size % batch != 0 (#101)."""
    model = build_model(kind, tiny_model_config(queue_size=7), tokenizer=tokenizer)
    for n in (1, 3, 3, 4):
        images, ids, atts = make_batch(model, n=n)
        extra = {"idx": torch.arange(n)} if kind == "retrieval" else {}
        out = model(images, ids, atts, alpha=0.4, **extra)
        assert all(torch.isfinite(v) for v in out.values())
    ptr = model.queue_ptr if kind == "pretrain" else model.ptr_queue
    assert ptr.item() == (1 + 3 + 3 + 4) % 7


def test_retrieval_batch_of_one_image_does_not_crash(tokenizer):
    model = build_model("retrieval", tiny_model_config(), tokenizer=tokenizer)
    images, ids, atts = make_batch(model)
    out = model(images, ids, atts, alpha=0.4, idx=torch.tensor([5, 5, 5, 5]))  # all positives: no negatives
    assert torch.isfinite(out["loss_itm"])


def test_decoder_shares_all_but_self_attention(pretrain):
    enc, dec = pretrain.text_encoder, pretrain.text_decoder.bert
    assert dec.embeddings is enc.embeddings
    for el, dl in zip(enc.encoder.layer, dec.encoder.layer):
        assert dl.crossattention is el.crossattention
        assert dl.intermediate is el.intermediate and dl.output is el.output
        assert dl.attention.self.query.weight is not el.attention.self.query.weight
    assert pretrain.text_decoder.cls.predictions.decoder.weight is enc.embeddings.word_embeddings.weight
    state = pretrain.state_dict()
    assert torch.equal(state["text_decoder.bert.encoder.layer.0.intermediate.dense.weight"],
                       state["text_encoder.encoder.layer.0.intermediate.dense.weight"])
    # parameters() counts shared tensors once
    names = {id(p) for p in pretrain.parameters()}
    assert len(names) == len(list(pretrain.parameters()))


def test_momentum_update_formula(pretrain):
    pretrain.momentum = 0.9
    shadow_before = pretrain.vision_proj_m.weight.detach().clone()
    with torch.no_grad():
        pretrain.vision_proj.weight.add_(1.0)
    pretrain.momentum_update()
    expected = 0.9 * shadow_before + 0.1 * pretrain.vision_proj.weight.detach()
    assert torch.allclose(pretrain.vision_proj_m.weight, expected, atol=1e-6)
    assert not any(p.requires_grad for p in pretrain.text_encoder_m.parameters())


def test_temperature_clamped(pretrain):
    images, ids, atts = make_batch(pretrain)
    with torch.no_grad():
        pretrain.temp.fill_(5.0)
    pretrain(images, ids, atts, alpha=0.4)
    assert pretrain.temp.item() == pytest.approx(0.5)


def test_bad_model_config_messages(tokenizer):
    with pytest.raises(ValueError, match="'vit_does_not_exist' is not 'base', 'large', a timm model name"):
        build_model("pretrain", tiny_model_config(vit="vit_does_not_exist"), tokenizer=tokenizer)
    with pytest.raises(ValueError, match="without a class token|VisionTransformer"):
        build_model("pretrain", tiny_model_config(vit="resnet18"), tokenizer=tokenizer)
    with pytest.raises(ValueError, match="tokenizer has .* tokens but med_config vocab_size is 10"):
        build_model("pretrain", tiny_model_config(med_config={"vocab_size": 10, "hidden_size": 32,
                                                               "num_attention_heads": 4}), tokenizer=tokenizer)
    with pytest.raises(ValueError, match="unknown key 'num_hiden_layers'; did you mean 'num_hidden_layers'"):
        build_model("pretrain", tiny_model_config(med_config={"num_hiden_layers": 2}), tokenizer=tokenizer)
    with pytest.raises(ValueError, match="model kind"):
        build_model("captioning", tiny_model_config(), tokenizer=tokenizer)


@pytest.mark.parametrize("all_rank", [False, True])
def test_retrieval_itm_hard_negatives_never_share_the_image_id(tokenizer, monkeypatch, all_rank):
    """End to end through BlipRetrieval.forward: every drawn negative has another image id than its row.

    Eight pairs of four images (ids 7,7,7,3,3,9,9,4): with a mask that ignored ``idx`` (only the diagonal),
    a same-image caption or image would be drawn as a "negative" in most forwards.
    """
    import models.blip_base

    idx = torch.tensor([7, 7, 7, 3, 3, 9, 9, 4])
    drawn = []
    real = models.blip_base.sample_hard_negatives

    def spy(sim, exclude, smoothing=0.0, generator=None):
        index, valid = real(sim, exclude, smoothing, generator)
        drawn.append((index.clone(), valid.clone()))
        return index, valid

    monkeypatch.setattr(models.blip_base, "sample_hard_negatives", spy)
    torch.manual_seed(0)
    model = build_model("retrieval", tiny_model_config(negative_all_rank=all_rank), tokenizer=tokenizer)
    images, ids, atts = make_batch(model, n=8)
    # pairs of one image show the same picture (as in a real batch), so their similarities are high
    images = images[torch.tensor([0, 0, 0, 1, 1, 2, 2, 3])]
    for seed in range(25):
        torch.manual_seed(seed)
        with torch.no_grad():
            model(images, ids, atts, alpha=0.4, idx=idx)
    assert len(drawn) == 2 * 25  # negative images for texts, negative texts for images
    for index, valid in drawn:
        assert valid.all()  # every row has a candidate of another image
        assert (idx[index] != idx).all(), (idx.tolist(), index.tolist())
