"""Contact sheet of a generated phantom dataset: images with their lesion boxes next to a caption.

For looking at the data (and for the docs), not used by training.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

__all__ = ["write_contact_sheet"]

_BOX_COLOURS = ((255, 80, 60), (255, 210, 0))  # lesion id 1, 2
_TEXT_WIDTH = 330


def write_contact_sheet(dataset_dir: str | Path, out_png: str | Path, *, split: str = "test", count: int = 8,
                        columns: int = 2) -> Path:
    """Write ``count`` images of ``split`` (boxes drawn 2 px outside each lesion) with their first caption."""
    root = Path(dataset_dir)
    metadata = json.loads((root / "metadata.json").read_text(encoding="utf-8"))
    records = _varied_selection([r for r in metadata["images"] if r["split"] == split], count)
    if not records:
        raise ValueError(f"{root / 'metadata.json'}: no images in split {split!r}")
    size = metadata["params"]["image_size"]
    font = ImageFont.load_default(size=13)
    cell_w, rows = size + _TEXT_WIDTH, -(-len(records) // columns)
    sheet = Image.new("RGB", (columns * cell_w, rows * (size + 6)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for slot, record in enumerate(records):
        x, y = (slot % columns) * cell_w, (slot // columns) * (size + 6)
        sheet.paste(Image.open(root / record["image"]).convert("RGB"), (x, y))
        for lesion in record["lesions"]:
            x0, y0, x1, y1 = lesion["box"]
            colour = _BOX_COLOURS[(lesion["id"] - 1) % len(_BOX_COLOURS)]
            draw.rectangle((x + x0 - 2, y + y0 - 2, x + x1 + 1, y + y1 + 1), outline=colour)
        text = "\n".join(textwrap.wrap(record["captions"][0], width=44))
        label = f"{record['image_id']}\n{text}"
        draw.multiline_text((x + size + 8, y + 4), label, fill=(20, 20, 20), font=font, spacing=2)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    # A fixed palette (grey ramp + the box colours) keeps the sheet small without losing the rare box pixels.
    palette = [level for grey in range(0, 256, 2) for level in (grey, grey, grey)]
    palette += [channel for colour in _BOX_COLOURS for channel in colour]
    palette_image = Image.new("P", (1, 1))
    palette_image.putpalette(palette + [0] * (768 - len(palette)))
    sheet.quantize(palette=palette_image, dither=Image.Dither.NONE).save(out, optimize=True)
    return out


def _varied_selection(records: list[dict], count: int) -> list[dict]:
    """Up to ``count`` records, taking modalities in turn so every modality shows up."""
    by_modality: dict[str, list[dict]] = {}
    for record in records:
        by_modality.setdefault(record["modality"], []).append(record)
    queues = list(by_modality.values())
    chosen: list[dict] = []
    while len(chosen) < count and any(queues):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(queue.pop(0))
    return chosen
