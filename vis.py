"""Grad-CAM maps of caption words over figures, and their localisation scores.

    # one figure, one caption
    python vis.py --checkpoint CKPT --image FIG.png --caption "axial ct: hyperdense lesion" --out fig.png
    # records of any image-caption list this project writes (scraper, splitter, phantom, retrieval)
    python vis.py --checkpoint CKPT --json LIST.json --index 3 --out fig.pdf
    python vis.py --checkpoint CKPT --json LIST.json --all --limit 8 --out_dir output/vis
    # localisation against phantom lesion masks or "boxes" in the records
    python vis.py --checkpoint CKPT --json data/phantom_data/retrieval_test.json --score

Exit status: 0 done, 1 nothing could be drawn, 2 bad input (the message says what and where).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import torch

from data.caption_lists import CaptionList, CaptionListError
from data.image_io import ImageError
from utils.atomic import atomic_write_json
from engine.config import load_yaml
from utils.errors import MedVLPError
from visualize.figure import FIGURE_FORMATS
from visualize.runner import format_scores, load_vis_model, render_list, render_pair, score_list

USER_ERRORS = (MedVLPError, ImageError)  # CaptionListError, GradCamError, CheckpointError... are MedVLPErrors


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--checkpoint", required=True, help="pretrain or retrieval checkpoint (ours, or BLIP's "
                        "with --config)")
    parser.add_argument("--config", help="YAML with the model keys, for checkpoints without a saved 'config'")
    source = parser.add_argument_group("what to draw")
    source.add_argument("--image", help="one figure")
    source.add_argument("--caption", help="caption text (with --image; with --json it replaces the record's)")
    source.add_argument("--json", help="an image-caption list (pretrain.json, subfigures.json, retrieval_*.json)")
    source.add_argument("--index", type=int, help="record of --json to draw (negative counts from the end)")
    source.add_argument("--all", action="store_true", help="draw every record of --json (see --limit)")
    source.add_argument("--limit", type=int, help="with --all / --score: only the first N records")
    source.add_argument("--caption_index", type=int, default=0, help="which caption of a record with several "
                        "(retrieval val/test files); default 0")
    source.add_argument("--image_root", help="folder relative image paths resolve against (default: the list's)")
    parser.add_argument("--layer", type=int, help="fusion layer, 0-based (default: 2/3 of the depth: 8 of BLIP's 12)")
    parser.add_argument("--out", help="figure file for one pair (.png, .pdf, .svg, .jpg); maps go next to it as "
                        ".npy and .json (default: output/vis/<image name>.png)")
    parser.add_argument("--out_dir", default="output/vis", help="folder for --all: figures, maps, thumbs, index.html")
    parser.add_argument("--format", default="png", choices=FIGURE_FORMATS, help="figure format for --all")
    parser.add_argument("--score", action="store_true", help="localisation scores of --json against its ground truth")
    parser.add_argument("--score_out", help="with --score: also write the summary as JSON here")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's, one per core); 1 is "
                        "fastest for small models such as the demo's, above all on a busy machine")
    return parser


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.score:
        if not args.json or args.image or args.index is not None:
            parser.error("--score needs --json LIST (and takes neither --image nor --index)")
        return
    if args.image:
        if args.json or args.index is not None or args.all:
            parser.error("--image draws one figure: do not combine it with --json/--index/--all")
        if args.caption is None:
            parser.error("--image needs --caption")
    elif args.json:
        if (args.index is None) == (not args.all):
            parser.error("with --json give either --index I or --all")
        if args.all and args.caption is not None:
            parser.error("--caption replaces one record's caption: use it with --index, not --all")
    else:
        parser.error("give --image FIG --caption TEXT, or --json LIST with --index/--all/--score")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be >= 1")
    if args.out and Path(args.out).suffix.lower().lstrip(".") not in FIGURE_FORMATS:
        parser.error(f"--out must end in one of {', '.join('.' + f for f in FIGURE_FORMATS)}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        config = load_yaml(args.config)[0] if args.config else None
        vis = load_vis_model(args.checkpoint, config, args.device)
        if args.score:
            summary = score_list(vis, args.json, layer=args.layer, limit=args.limit, image_root=args.image_root,
                                 progress=lambda text: print(f"  {text}", file=sys.stderr))
            print(format_scores(summary))
            if args.score_out:
                atomic_write_json(args.score_out, summary, indent=1)
            return 0
        if args.all:
            summary = render_list(vis, args.json, args.out_dir, limit=args.limit, layer=args.layer,
                                  caption_index=args.caption_index, image_root=args.image_root, fmt=args.format)
            print(f"{summary['drawn']} figures (fusion layer {summary['layer']}) in {args.out_dir}, "
                  f"{sum(summary['skipped'].values())} skipped {summary['skipped'] or ''}; "
                  f"open {summary['index']}")
            return 0 if summary["drawn"] else 1
        if args.json:
            item = CaptionList(args.json, args.image_root).item(args.index)
            if args.caption is not None:
                caption = args.caption
            elif -len(item.captions) <= args.caption_index < len(item.captions):
                caption = item.captions[args.caption_index]
            else:
                raise CaptionListError(f"{args.json}[{item.index}]: caption index {args.caption_index} is outside "
                                       f"its {len(item.captions)} captions")
            image = item.image
        else:
            image, caption = Path(args.image), args.caption
        out = Path(args.out) if args.out else Path(args.out_dir) / f"{Path(image).stem}.png"
        cam = render_pair(vis, image, caption, out, layer=args.layer)
        print(f"{out} (+ .npy, .json): {len(cam.words)} words, fusion layer {cam.layer}, "
              f"ITM match probability {cam.itm_probability:.3f}")
        return 0
    except USER_ERRORS as exc:
        print(f"vis.py: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
