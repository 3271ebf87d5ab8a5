"""The experiment behind docs/vis.md "What would reach the goal": ITM training and resolution vs localisation.

Starting from a phantom checkpoint (e.g. the demo's), it continues training with BLIP's retrieval
objectives (``BlipRetrieval.forward``: ITC + ITM with hard negatives that never share the image
id) on ``retrieval_train.json``, optionally at another resolution (position embeddings are
interpolated, as BLIP does when it changes image size), and scores Grad-CAM localisation on
the phantom test split with ``vis.py --score``'s code every ``--eval_every`` steps, for every
fusion layer but the last. It is a minimal loop (one process, preloaded images, no
augmentation, AdamW at a constant rate, no schedule) for measuring, not a trainer: once
``train_retrieval.py`` exists, fine-tune with it and score with ``vis.py --score``.

    python bench/vis_localization_experiment.py --checkpoint output/pretrain_demo/checkpoint_last.pth \\
        --out output/vis_experiment/ft48 --steps 1000
    python bench/vis_localization_experiment.py --checkpoint output/vis_experiment/ft48/checkpoint_last.pth \\
        --out output/vis_experiment/ft128 --image_size 128 --batch 32 --steps 1500
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.captions import pre_caption  # noqa: E402
from data.image_io import open_image  # noqa: E402
from data.transforms import build_image_transform  # noqa: E402
from models import build_model, save_checkpoint  # noqa: E402
from models.checkpoint import load_state, read_checkpoint  # noqa: E402
from visualize.runner import VisModel, score_list  # noqa: E402


@torch.no_grad()
def itm_hard_negative_accuracy(vis: VisModel, data: Path, seed: int = 0) -> tuple[float, float]:
    """How often the ITM head scores a test image's caption above (a) a random other image's caption and
    (b) the caption of another image with the same modality and number of lesions (differs in lesion
    attributes or place only: telling them apart needs the lesion)."""
    rng = random.Random(seed)
    test = [r for r in json.loads((data / "metadata.json").read_text())["images"] if r["split"] == "test"]
    wins_random, wins_hard = [], []
    for record in test:
        _, image = vis.load_image(data / record["image"])
        embeds = vis.model.encode_image(image[None])
        others = [o for o in test if o is not record]
        alike = [o for o in others if o["modality"] == record["modality"]
                 and o["num_lesions"] == record["num_lesions"]] or others
        captions = [vis.clean(r["captions"][0]) for r in (record, rng.choice(others), rng.choice(alike))]
        ids, atts = vis.model.tokenize(captions)
        match = vis.model.itm_logits(embeds.expand(3, -1, -1), ids, atts).softmax(-1)[:, 1].tolist()
        wins_random.append(match[0] > match[1])
        wins_hard.append(match[0] > match[2])
    return float(np.mean(wins_random)), float(np.mean(wins_hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a phantom pretrain or retrieval checkpoint of ours")
    parser.add_argument("--out", required=True)
    parser.add_argument("--data", default="data/phantom_data")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--eval_every", type=int, default=250)
    parser.add_argument("--image_size", type=int, help="train at this size (default: the checkpoint's)")
    parser.add_argument("--batch", type=int, default=48)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    state, fmt, extras = read_checkpoint(args.checkpoint)
    config = dict(extras["config"], text_encoder=None, vit_init=None, pretrained=None)
    if args.image_size:
        config["image_size"] = args.image_size
    model = build_model("retrieval", config)
    print(load_state(model, state, source=args.checkpoint, fmt=fmt).summary(), flush=True)

    root = Path(args.data)
    records = json.loads((root / "retrieval_train.json").read_text())
    image_ids = sorted({r["image_id"] for r in records})
    row_of = {image_id: row for row, image_id in enumerate(image_ids)}
    path_of = {r["image_id"]: root / r["image"] for r in records}
    transform = build_image_transform("test", int(config["image_size"]))
    images = torch.stack([transform(open_image(path_of[i])) for i in image_ids])
    pairs = [(row_of[r["image_id"]], pre_caption(r["caption"], config.get("max_words", 30))) for r in records]
    grid = tuple(model.visual_encoder.patch_embed.grid_size)
    print(f"{len(image_ids)} images, {len(pairs)} pairs, {config['image_size']} px, grid {grid}", flush=True)

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.05)
    started, losses = time.time(), []
    model.train()
    with open(out / "log.jsonl", "a", encoding="utf-8") as log:
        for step in range(1, args.steps + 1):
            chosen = rng.sample(range(len(pairs)), args.batch)
            idx = torch.tensor([pairs[i][0] for i in chosen])
            text_ids, text_atts = model.tokenize([pairs[i][1] for i in chosen])
            loss = model(images[idx], text_ids, text_atts, alpha=0.4 * min(1.0, step / 200), idx=idx)
            optimizer.zero_grad()
            (loss["loss_ita"] + loss["loss_itm"]).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            losses.append((loss["loss_ita"].item(), loss["loss_itm"].item()))
            if step % args.eval_every and step != args.steps:
                continue
            model.eval()
            vis = VisModel(model, dict(config), f"step {step}", torch.device("cpu"))
            scores = {layer: score_list(vis, root / "retrieval_test.json", layer=layer)
                      for layer in range(vis.depth - 1)}
            versus_random, versus_alike = itm_hard_negative_accuracy(vis, root)
            model.train()
            ita, itm = np.mean(losses[-args.eval_every:], axis=0)
            entry = {"step": step, "seconds": round(time.time() - started), "loss_ita": ita, "loss_itm": itm,
                     "itm_beats_random_negative": versus_random, "itm_beats_alike_negative": versus_alike,
                     "image_size": config["image_size"], "grid": grid,
                     "scores": {layer: {kind: s[kind] for kind in ("caption", "phrase")}
                                for layer, s in scores.items()}}
            log.write(json.dumps(entry) + "\n")
            log.flush()
            print(f"step {step}: ITM ranks the true caption first vs a random one {versus_random:.3f}, vs one of "
                  f"the same modality and lesion count {versus_alike:.3f}", flush=True)
            for layer, s in scores.items():
                caption, phrase = s["caption"]["all"], s["phrase"]["all"]
                print(f"step {step} ({entry['seconds']} s) ITC {ita:.3f} ITM {itm:.3f} layer {layer}: caption "
                      f"pointing {caption['pointing']:.3f} cell {caption['cell_pointing']:.3f} energy "
                      f"{caption['energy']:.3f} (chance {caption['chance_pointing']:.3f}); phrase pointing "
                      f"{phrase['pointing']:.3f}", flush=True)
            save_checkpoint(model, out / "checkpoint_last.pth", config=dict(config), step=step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
