"""CLI: ``python -m data.phantom --out data/phantom_data [--num_train N ...]``."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from data.phantom.generate import PhantomParams, generate_phantom_dataset, phantom_dataset_is_complete


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data.phantom",
        description="Generate the synthetic head CT/MRI phantom image-caption dataset (deterministic).",
    )
    parser.add_argument("--out", default="data/phantom_data", help="dataset folder (default: %(default)s)")
    parser.add_argument("--num_train", type=int, default=3000, help="training images (default: %(default)s)")
    parser.add_argument("--num_val", type=int, default=200, help="validation images (default: %(default)s)")
    parser.add_argument("--num_test", type=int, default=200, help="test images (default: %(default)s)")
    parser.add_argument("--image_size", type=int, default=128, help="image side in pixels (default: %(default)s)")
    parser.add_argument("--captions_per_image", type=int, default=5, help="captions per image (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes; output is identical for any value")
    parser.add_argument("--preview", metavar="PNG", help="also write a contact sheet of test images to this file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    params = PhantomParams(
        args.num_train, args.num_val, args.num_test, args.image_size, args.captions_per_image, args.seed
    )
    try:
        params.validate()
        already = phantom_dataset_is_complete(args.out, params)
        started = time.perf_counter()
        paths = generate_phantom_dataset(args.out, workers=args.workers, progress=not args.quiet, **params.to_json())
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if already:
        print(f"{paths['root']}: complete phantom dataset with these parameters already there; nothing to do")
    else:
        total = args.num_train + args.num_val + args.num_test
        print(f"{paths['root']}: wrote {total} images ({args.num_train} train / {args.num_val} val / "
              f"{args.num_test} test) in {time.perf_counter() - started:.1f} s")
    if args.preview:
        from data.phantom.preview import write_contact_sheet

        write_contact_sheet(paths["root"], args.preview)
        print(f"contact sheet: {args.preview}")
    for key in ("pretrain", "retrieval_train", "retrieval_val", "retrieval_test", "metadata", "tokenizer"):
        print(f"  {key:16s} {paths[key]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
