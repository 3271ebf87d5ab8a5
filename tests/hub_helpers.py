"""Local stand-ins for hub content: a tiny BERT in BiomedBERT's published layout, a filled hub cache, a closed port."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path
from typing import Sequence

import torch

from tests.conftest import TINY_TEXT

BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# A fixed commit hash for hand-made cache entries (the cache layout needs one).
CACHE_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def closed_port() -> int:
    """A local TCP port nothing listens on: connecting is refused at once (a deterministic 'no network')."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_bert_folder(folder: Path, words: Sequence[str], *, weights: str = "pytorch_model.bin",
                      legacy_layernorm_names: bool = False, seed: int = 0):
    """A tiny ``BertForMaskedLM`` saved as microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract-fulltext is
    published: ``config.json`` (model_type bert, BertForMaskedLM), ``vocab.txt`` and one weights file, no
    tokenizer_config.json / tokenizer.json / special_tokens_map.json. Returns the transformers model.

    ``legacy_layernorm_names`` writes ``LayerNorm.gamma/beta`` as pre-2020 BERT checkpoints did.
    """
    from transformers import BertConfig, BertForMaskedLM

    folder.mkdir(parents=True, exist_ok=True)
    vocab = BERT_SPECIALS + sorted({w for w in words if w not in BERT_SPECIALS})
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    shape = {k: TINY_TEXT[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                        "intermediate_size", "max_position_embeddings")}
    config = {"architectures": ["BertForMaskedLM"], "model_type": "bert", "vocab_size": len(vocab),
              "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
              "initializer_range": 0.02, "layer_norm_eps": 1e-12, "type_vocab_size": 2, "pad_token_id": 0, **shape}
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    torch.manual_seed(seed)
    model = BertForMaskedLM(BertConfig(**{k: v for k, v in config.items() if k not in ("architectures",)})).eval()
    with torch.no_grad():
        model.bert.embeddings.token_type_embeddings.weight.zero_()  # BLIP has no token types
    state = {k: v.clone() for k, v in model.state_dict().items()}  # no shared storage (safetensors refuses it)
    if legacy_layernorm_names:
        state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
                 for k, v in state.items()}
    if weights.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(state, str(folder / weights))
    else:
        torch.save(state, folder / weights)
    return model


def write_hub_cache(cache: Path, repo_id: str, source: Path) -> Path:
    """Copy ``source``'s files into ``cache`` as huggingface_hub stores a downloaded model repo."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / CACHE_COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(CACHE_COMMIT)
    for path in source.iterdir():
        shutil.copy(path, snapshot / path.name)
    return snapshot
