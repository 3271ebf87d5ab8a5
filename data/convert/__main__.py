"""``python -m data.convert SOURCE ... --out FILE.json``: a public data set -> pretraining JSON + report.

    python -m data.convert roco /data/roco-dataset/data --out data/roco/roco.json [--splits train validation]
    python -m data.convert pmc_oa /data/pmc_oa/pmc_oa.jsonl --images /data/pmc_oa/images --out data/pmc_oa/pmc_oa.json
    python -m data.convert medicat /data/medicat/s2_full_figures_oa_nonroco_combined_medic_caption.jsonl \\
        --figures /data/medicat/figures --out data/medicat/medicat.json
    python -m data.convert medicat_subcaptions /data/medicat/subcaptions.jsonl --figures /data/medicat/figures \\
        --crops data/medicat/crops --out data/medicat/subcaptions.json [--licences-from FIGURES.jsonl]
    python -m data.convert quilt /data/quilt/quilt_1M_lookup.csv --images /data/quilt/quilt_1m --out data/quilt/quilt.json
    python -m data.convert openclip_csv train.csv --image-root /data --out data/mine.json [--separator $'\\t']
    python -m data.convert folder my_figures/ --out data/mine/mine.json [--license "CC BY"] [--source-name mine]

Every run writes the JSON list (image paths relative to its folder) and ``<out>.report.json`` with
the records read, kept and skipped by reason, and prints the summary. ``--image-check`` (default
``header``) sets how much of each image is read: ``exists``, ``header`` or ``decode`` (full decode,
catches truncated files). Webdataset tars are not converted: ``python -m data.prepare index``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from data.convert.common import write_conversion
from data.convert.csv_sources import convert_openclip_csv, convert_quilt
from data.convert.folder import convert_folder
from data.convert.medicat import convert_medicat, convert_medicat_subcaptions, medicat_licence
from data.convert.pmc_oa import convert_pmc_oa
from data.convert.roco import ROCO_PARTS, ROCO_SPLITS, convert_roco
from utils.errors import DatasetError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data.convert", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="source", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("input", type=Path)
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--image-check", choices=("none", "exists", "header", "decode"), default="header")
        return p

    p = add("roco", "ROCO: <root>/<split>/<radiology|non-radiology>/captions.txt + images/")
    p.add_argument("--splits", nargs="+", default=list(ROCO_SPLITS))
    p.add_argument("--parts", nargs="+", default=list(ROCO_PARTS))
    p = add("pmc_oa", "PMC-OA: pmc_oa.jsonl / pmc_oa_beta.jsonl + images/")
    p.add_argument("--images", type=Path, default=None)
    p.add_argument("--variant", choices=("pmc_oa", "pmc_oa_beta"), default=None)
    p.add_argument("--license", default=None)
    p = add("medicat", "MedICaT figures JSONL + figures/")
    p.add_argument("--figures", type=Path, default=None)
    p = add("medicat_subcaptions", "MedICaT subcaption annotations JSONL -> subfigure crops")
    p.add_argument("--figures", type=Path, default=None)
    p.add_argument("--crops", type=Path, required=True)
    p.add_argument("--licences-from", type=Path, default=None, help="MedICaT figures JSONL to take licences from")
    p = add("quilt", "Quilt-1M: quilt_1M_lookup.csv + image folder")
    p.add_argument("--images", type=Path, default=None)
    p.add_argument("--splits", nargs="+", default=None)
    p.add_argument("--license", default=None)
    p = add("openclip_csv", "open_clip CSV (filepath / title columns)")
    p.add_argument("--image-root", type=Path, default=None)
    p.add_argument("--separator", default="\t")
    p.add_argument("--img-key", default="filepath")
    p.add_argument("--caption-key", default="title")
    p.add_argument("--source-name", default="openclip_csv")
    p.add_argument("--license", default=None)
    p = add("folder", "your own folder: <name>.<image ext> + <name>.txt caption, any subfolders")
    p.add_argument("--source-name", default="folder")
    p.add_argument("--license", default=None)
    return parser


def _licences(path: Path) -> dict[str, str]:
    out = {}
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict) and obj.get("pdf_hash") and obj.get("fig_uri") and medicat_licence(obj):
                out[f"{obj['pdf_hash']}_{obj['fig_uri']}"] = medicat_licence(obj)
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    check = args.image_check
    try:
        if args.source == "roco":
            conversion = convert_roco(args.input, splits=tuple(args.splits), parts=tuple(args.parts), image_check=check)
        elif args.source == "pmc_oa":
            conversion = convert_pmc_oa(args.input, image_dir=args.images, variant=args.variant,
                                        license=args.license, image_check=check)
        elif args.source == "medicat":
            conversion = convert_medicat(args.input, figures_dir=args.figures, image_check=check)
        elif args.source == "medicat_subcaptions":
            licences = _licences(args.licences_from) if args.licences_from else None
            conversion = convert_medicat_subcaptions(args.input, crops_dir=args.crops, figures_dir=args.figures,
                                                     licences=licences)
        elif args.source == "quilt":
            conversion = convert_quilt(args.input, image_dir=args.images,
                                       splits=tuple(args.splits) if args.splits else None,
                                       license=args.license, image_check=check)
        elif args.source == "folder":
            conversion = convert_folder(args.input, source=args.source_name, license=args.license, image_check=check)
        else:
            conversion = convert_openclip_csv(args.input, image_root=args.image_root, separator=args.separator,
                                              img_key=args.img_key, caption_key=args.caption_key,
                                              source=args.source_name, license=args.license, image_check=check)
    except (DatasetError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report_path = write_conversion(conversion, args.out)
    report = conversion.report()
    print(f"{report['records_out']} of {report['records_in']} records -> {args.out}")
    print(f"skipped {report['skipped_total']}: {json.dumps(report['skipped'])} (report: {report_path})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
