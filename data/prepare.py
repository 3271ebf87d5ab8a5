"""``python -m data.prepare``: JSON lists -> training shards; index existing webdataset tars; verify shards.

    python -m data.prepare shards data/pubmed/pretrain.json data/roco/roco.json --out data/shards/mix \\
        [--max-side 448] [--format jpeg|png] [--quality 90] [--shard-samples 10000] [--shard-mb 512] \\
        [--workers 8] [--image-root DIR]
    python -m data.prepare index /data/laion/{00000..00999}.tar --out data/laion_manifest.json \\
        --source laion --license "LAION terms" [--image-check none|header|decode]
    python -m data.prepare verify data/shards/mix      # recompute every shard's sha256

``--max-side`` defaults to twice the largest ``image_size`` of the configs in ``configs/`` (so a
RandomResizedCrop at the largest training resolution still draws from a sharper image). A killed
``shards`` run continues where it stopped when rerun with the same arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ruamel.yaml import YAML

from data.shards.index import index_tars
from data.shards.manifest import Manifest, file_sha256
from data.shards.writer import PrepareSettings, prepare_shards
from utils.errors import DatasetError

__all__ = ["default_max_side", "main"]

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def default_max_side(config_dir: Path = CONFIG_DIR) -> int:
    """2 x the largest ``image_size`` found in ``config_dir/*.yaml`` (448 when none is found)."""
    sizes = []
    yaml = YAML(typ="safe", pure=True)
    for path in sorted(Path(config_dir).glob("*.yaml")):
        try:
            data = yaml.load(path.read_text(encoding="utf-8"))
        except Exception:  # a broken config is the config loader's business, not ours
            continue
        if isinstance(data, dict) and isinstance(data.get("image_size"), int):
            sizes.append(data["image_size"])
    return 2 * max(sizes) if sizes else 448


def _verify(path: Path) -> int:
    manifest = Manifest.load(path, check_sizes=False)
    bad = 0
    for shard in manifest.shards:
        if not shard.path.is_file():
            print(f"MISSING  {shard.path}")
            bad += 1
            continue
        size, digest = shard.path.stat().st_size, file_sha256(shard.path)
        ok = size == shard.bytes and digest == shard.sha256
        bad += not ok
        print(f"{'ok      ' if ok else 'CHANGED '} {shard.path} ({size} bytes)")
    print(f"{len(manifest.shards) - bad} of {len(manifest.shards)} shards match {manifest.path}")
    return 1 if bad else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data.prepare", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    shards = sub.add_parser("shards", help="JSON lists -> resized, re-encoded shards + manifest")
    shards.add_argument("inputs", nargs="+", type=Path, help="BLIP-format JSON lists")
    shards.add_argument("--out", type=Path, required=True, help="output folder (shards + manifest.json)")
    shards.add_argument("--max-side", type=int, default=None, help="longest image side (default: 2x largest config image_size)")
    shards.add_argument("--format", choices=("jpeg", "png"), default="jpeg", help="jpeg (default) or lossless png")
    shards.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    shards.add_argument("--shard-samples", type=int, default=10_000, help="max samples per shard")
    shards.add_argument("--shard-mb", type=float, default=512, help="max MiB per shard")
    shards.add_argument("--workers", type=int, default=0, help="encoding processes (0: this process)")
    shards.add_argument("--image-root", type=Path, default=None, help="resolve relative image paths here")
    shards.add_argument("--source", default=None, help="source name for records without a 'source' field")
    shards.add_argument("--license", default=None, help="licence note for the manifest")
    index = sub.add_parser("index", help="manifest for existing webdataset tars (read as they are)")
    index.add_argument("tars", nargs="+", type=Path)
    index.add_argument("--out", type=Path, required=True, help="manifest file to write")
    index.add_argument("--source", required=True)
    index.add_argument("--license", default="unknown")
    index.add_argument("--image-check", choices=("none", "header", "decode"), default="header")
    verify = sub.add_parser("verify", help="recompute the sha256 of every shard of a manifest")
    verify.add_argument("manifest", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "verify":
            return _verify(args.manifest)
        if args.command == "index":
            manifest = index_tars(args.tars, args.out, source=args.source, license=args.license,
                                  image_check=args.image_check)
        else:
            settings = PrepareSettings(
                max_side=args.max_side or default_max_side(), image_format=args.format, quality=args.quality,
                shard_samples=args.shard_samples, shard_bytes=int(args.shard_mb * 2**20),
            )
            manifest = prepare_shards(args.inputs, args.out, settings, image_root=args.image_root,
                                      workers=args.workers, source=args.source, license=args.license, progress=True)
    except (DatasetError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = manifest.counts
    print(f"{counts.get('samples')} samples in {len(manifest.shards)} shards "
          f"({sum(s.bytes for s in manifest.shards) / 2**20:.1f} MiB) -> {manifest.path}")
    print(f"skipped {counts.get('skipped_total', 0)}: {json.dumps(counts.get('skipped', {}))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
