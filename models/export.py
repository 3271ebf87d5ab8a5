"""Export to transformers: a ``save_pretrained`` folder that ``BlipForImageTextRetrieval`` or
``BlipForConditionalGeneration`` loads and that gives our numbers.

Renaming the weights (:func:`models.checkpoint.blip_to_transformers`) is not
enough on its own: the ``BlipConfig`` must match the model (vision
``layer_norm_eps`` 1e-6 where transformers defaults to 1e-5, the text side's
``encoder_hidden_size``, ``image_text_hidden_size`` = ``embed_dim``, the
vocabulary with ``[DEC]``/``[ENC]``, their ids as bos/pad/sep), the retrieval
class refuses ``text_decoder.*`` keys, and the tokenizer must come along. One
call does all of it, checks on a random image that the written folder
reproduces the model (ITM and ITC, or LM logits), and only then moves the
folder into place::

    python -m models.export output/pretrain/checkpoint_last.pth export/retrieval --kind retrieval

Two input conventions of BLIP that transformers leaves to the caller: ITM input
ids start with ``[ENC]`` instead of ``[CLS]``, and decoder (LM) input ids start
with ``[DEC]`` (``generate`` sets that one itself). See the README, "Export to
transformers".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from data.transforms import CLIP_MEAN, CLIP_STD
from engine.distributed import unwrap_model
from models.blip_base import BlipBase
from models.build import build_from_checkpoint
from models.checkpoint import LoadReport, blip_to_transformers
from models.tokenizer import load_tokenizer, special_token_ids
from utils.atomic import atomic_directory
from utils.errors import CheckpointError, MedVLPError

__all__ = ["EXPORT_KINDS", "blip_config", "export_transformers", "main"]

# kind -> (our model kind holding every weight it needs, transformers class name)
EXPORT_KINDS = {
    "retrieval": ("retrieval", "BlipForImageTextRetrieval"),
    "captioning": ("pretrain", "BlipForConditionalGeneration"),
}
VERIFY_TOLERANCE = 1e-4  # rtol and atol; fp32 on CPU measures ~1e-6 (README, "Export to transformers")
VERIFY_CAPTION = "axial ct shows a hyperdense lesion in the left frontal lobe"


def _vision_problems(vit: nn.Module) -> list[str]:
    """What transformers' BlipVisionModel cannot represent in a timm ViT."""
    problems = []
    block = vit.blocks[0]
    if getattr(vit, "cls_token", None) is None or getattr(vit, "num_prefix_tokens", 1) != 1:
        problems.append("it needs exactly one class token and no register tokens")
    if getattr(vit, "no_embed_class", False):
        problems.append("position embeddings must include the class token")
    if not isinstance(getattr(vit, "norm_pre", nn.Identity()), nn.Identity):
        problems.append("a pre-norm before the blocks")
    if block.attn.qkv.bias is None or vit.patch_embed.proj.bias is None:
        problems.append("qkv and patch projections need biases")
    if not isinstance(getattr(block, "ls1", nn.Identity()), nn.Identity):
        problems.append("layer scale")
    if not isinstance(getattr(block.attn, "q_norm", nn.Identity()), nn.Identity):
        problems.append("q/k normalisation")
    act = getattr(block.mlp, "act", None)
    if not isinstance(act, nn.GELU) or act.approximate != "none":
        problems.append(f"MLP activation {type(act).__name__} (transformers: exact GELU)")
    size = vit.patch_embed.img_size
    if size[0] != size[1] or vit.patch_embed.patch_size[0] != vit.patch_embed.patch_size[1]:
        problems.append("square images and patches only")
    return problems


def blip_config(model: BlipBase) -> Any:
    """The transformers ``BlipConfig`` that describes ``model`` exactly."""
    from transformers import BlipConfig, BlipTextConfig, BlipVisionConfig

    vit = model.visual_encoder
    problems = _vision_problems(vit)
    if problems:
        raise CheckpointError(f"transformers' BLIP cannot hold this image encoder: {'; '.join(problems)}")
    block = vit.blocks[0]
    med = model.med_config
    special = model.special_tokens
    vision = BlipVisionConfig(
        hidden_size=vit.embed_dim, intermediate_size=block.mlp.fc1.out_features, num_hidden_layers=len(vit.blocks),
        num_attention_heads=block.attn.num_heads, image_size=vit.patch_embed.img_size[0],
        patch_size=vit.patch_embed.patch_size[0], layer_norm_eps=vit.norm.eps, hidden_act="gelu",
    )
    text = BlipTextConfig(
        vocab_size=model.text_encoder.embeddings.word_embeddings.num_embeddings, hidden_size=med.hidden_size,
        encoder_hidden_size=vit.embed_dim, intermediate_size=med.intermediate_size,
        num_hidden_layers=med.num_hidden_layers, num_attention_heads=med.num_attention_heads,
        max_position_embeddings=med.max_position_embeddings, hidden_act=med.hidden_act,
        layer_norm_eps=med.layer_norm_eps, hidden_dropout_prob=med.hidden_dropout_prob,
        attention_probs_dropout_prob=med.attention_probs_dropout_prob, initializer_range=med.initializer_range,
        label_smoothing=med.label_smoothing,
        bos_token_id=special.bos, pad_token_id=special.pad, sep_token_id=special.sep, eos_token_id=special.sep,
    )
    return BlipConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                      image_text_hidden_size=model.vision_proj.out_features, label_smoothing=med.label_smoothing)


def _check_captioning_weights(model: BlipBase, report: LoadReport) -> None:
    needed = [k for k in report.missing_problems if k.startswith(("visual_encoder.", "text_decoder."))]
    decoder_keys = [k for k in model.state_dict() if k.startswith("text_decoder.") and not k.endswith("position_ids")]
    if decoder_keys and all(k in report.missing for k in decoder_keys):
        raise CheckpointError(f"{report.source} has no text decoder (text_decoder.*): export it with kind='retrieval'")
    if needed or report.shape_mismatch:
        raise CheckpointError(f"checkpoint does not hold a whole captioning model:\n{report.summary()}")


@torch.no_grad()
def _verify(model: BlipBase, hf: Any, hf_tokenizer: Any, kind: str) -> float:
    """Largest difference between our outputs and the exported model's on one random image; raises if too big."""
    device = next(model.parameters()).device
    size = model.visual_encoder.patch_embed.img_size[0]
    image = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    batch = hf_tokenizer([model.clean_captions([VERIFY_CAPTION])[0]], return_tensors="pt")
    ids, atts = batch.input_ids.to(device), batch.attention_mask.to(device)
    special = special_token_ids(hf_tokenizer)
    if special != model.special_tokens:
        raise CheckpointError(f"the exported tokenizer's special ids {special} differ from the model's "
                              f"{model.special_tokens}; nothing was written")
    pairs = []
    if kind == "retrieval":
        enc_ids = ids.clone()
        enc_ids[:, 0] = special.enc  # BLIP's ITM input: [ENC] instead of [CLS]
        image_embeds = model.encode_image(image)
        pairs.append((model.itm_logits(image_embeds, ids, atts),
                      hf(input_ids=enc_ids, pixel_values=image, attention_mask=atts, use_itm_head=True).itm_score))
        ours_itc = model.image_features(image_embeds) @ model.text_features(model.encode_text(ids, atts)).t()
        pairs.append((ours_itc, hf(input_ids=ids, pixel_values=image, attention_mask=atts,
                                   use_itm_head=False).itm_score))
    else:
        dec_ids = ids.clone()
        dec_ids[:, 0] = special.bos  # BLIP's decoder input: [DEC] instead of [CLS]
        ours = model.text_decoder(dec_ids, atts, encoder_hidden_states=model.encode_image(image)).logits
        pairs.append((ours, hf(pixel_values=image, input_ids=dec_ids, attention_mask=atts).logits))
    worst = 0.0
    for ours, theirs in pairs:
        worst = max(worst, float((ours.float() - theirs.float()).abs().max()))
        if not torch.allclose(ours.float(), theirs.float(), rtol=VERIFY_TOLERANCE, atol=VERIFY_TOLERANCE):
            raise CheckpointError(f"the exported model does not reproduce ours (max difference {worst:.2e}); "
                                  "nothing was written")
    return worst


def export_transformers(checkpoint: Any, out_dir: str | Path, kind: str = "retrieval", *,
                        config: Mapping[str, Any] | None = None, tokenizer: Any = None,
                        verify: bool = True) -> Path:
    """Write ``out_dir`` for ``BlipForImageTextRetrieval`` (``kind="retrieval"``) or
    ``BlipForConditionalGeneration`` (``kind="captioning"``): config, weights, tokenizer, image processor.

    ``checkpoint``: our model (``BlipPretrain``/``BlipRetrieval``), a checkpoint
    the loader reads (path, URL, hub name; ours or BLIP's), or what ``torch.load``
    returned for one. Checkpoints carry their model config; pass ``config`` (model
    keys as ``build_model`` takes them) when one does not, and ``tokenizer`` (a
    folder, hub name or tokenizer) to replace the config's. Captioning needs a
    checkpoint with a text decoder (pretraining). With ``verify`` the written
    folder is loaded back and must reproduce our outputs on a random image
    (rtol = atol = 1e-4) before it is moved to ``out_dir``; ``out_dir`` must be
    new or empty. Returns ``out_dir``.
    """
    import transformers

    if kind not in EXPORT_KINDS:
        raise ValueError(f"kind must be one of {sorted(EXPORT_KINDS)}, got {kind!r}")
    if isinstance(checkpoint, nn.Module):
        model = unwrap_model(checkpoint)
        if not isinstance(model, BlipBase):
            raise TypeError(f"expected a BLIP model (BlipPretrain / BlipRetrieval), got {type(model).__name__}")
        if kind == "captioning" and getattr(model, "text_decoder", None) is None:
            raise CheckpointError(f"a {type(model).__name__} has no text decoder: export it with kind='retrieval'")
        if tokenizer is not None:
            model.tokenizer = load_tokenizer(tokenizer) if isinstance(tokenizer, (str, Path)) else tokenizer
        if model.tokenizer is None:
            raise CheckpointError("the model was built without a tokenizer; pass tokenizer=...")
    else:
        # Captioning uses only the image encoder and the decoder: a checkpoint without the rest
        # (BLIP's captioning ones) is fine, one without a decoder is not.
        model = build_from_checkpoint(checkpoint, EXPORT_KINDS[kind][0], config=config, tokenizer=tokenizer,
                                      strict=kind == "retrieval")
        if kind == "captioning":
            _check_captioning_weights(model, model.init_reports[-1])
    if special_token_ids(model.tokenizer) != model.special_tokens:
        raise CheckpointError("the tokenizer's special token ids differ from the ones the model was built with")

    hf_class = getattr(transformers, EXPORT_KINDS[kind][1])
    hf = hf_class(blip_config(model))
    state = blip_to_transformers(model.state_dict(), kind=kind)
    result = hf.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if missing or result.unexpected_keys:
        raise CheckpointError(f"weights do not fit {hf_class.__name__}: missing {missing[:5]}, "
                              f"unexpected {result.unexpected_keys[:5]}")
    processor = transformers.BlipProcessor(
        image_processor=transformers.BlipImageProcessor(
            size={"height": hf.config.vision_config.image_size, "width": hf.config.vision_config.image_size},
            image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD)),
        tokenizer=model.tokenizer,
    )
    was_training = model.training
    model.eval()
    try:
        with atomic_directory(out_dir) as staging:
            hf.save_pretrained(staging)
            processor.save_pretrained(staging)
            if verify:
                device = next(model.parameters()).device
                reloaded = hf_class.from_pretrained(staging).to(device).eval()
                _verify(model, reloaded, transformers.AutoTokenizer.from_pretrained(staging), kind)
    except FileExistsError as exc:
        raise CheckpointError(str(exc)) from None
    finally:
        model.train(was_training)
    return Path(out_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.export",
        description="Write a transformers BLIP folder (config, weights, tokenizer, image processor) from a checkpoint.",
    )
    parser.add_argument("checkpoint", help="our checkpoint (.pth), BLIP's, a transformers BLIP folder, URL or hub name")
    parser.add_argument("out_dir", help="new (or empty) output folder")
    parser.add_argument("--kind", choices=sorted(EXPORT_KINDS), default="retrieval",
                        help="retrieval: BlipForImageTextRetrieval; captioning: BlipForConditionalGeneration")
    parser.add_argument("--tokenizer", help="tokenizer folder or hub name (default: the checkpoint config's)")
    parser.add_argument("--no_verify", action="store_true", help="skip reloading the folder and comparing outputs")
    args = parser.parse_args(argv)
    try:
        out = export_transformers(args.checkpoint, args.out_dir, args.kind, tokenizer=args.tokenizer,
                                  verify=not args.no_verify)
    except MedVLPError as exc:
        print(f"python -m models.export: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({EXPORT_KINDS[args.kind][1]}; load it with .from_pretrained({str(out)!r}))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
