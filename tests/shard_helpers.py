"""Small BLIP-format data sets and LAION-style tars for the shard tests."""

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def make_json_set(folder: Path, n: int, *, bad: bool = True, size=(48, 36), prefix: str = "im") -> Path:
    """``n`` good records (distinct random images) plus, with ``bad``, one of each bad kind."""
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        arr = (np.random.default_rng([hash(prefix) % 1000, i]).random((size[1] + i % 5, size[0], 3)) * 255)
        Image.fromarray(arr.astype(np.uint8)).save(folder / f"{prefix}{i}.png")
        records.append({"image": f"{prefix}{i}.png", "caption": f"Figure {i}: axial <b>CT</b> of case {prefix}{i}",
                        "source": "scrape", "license": "CC BY", "source_id": f"{prefix}-{i}"})
    if bad:
        (folder / "trunc.png").write_bytes((folder / f"{prefix}0.png").read_bytes()[:60])
        records += [
            {"image": "absent.png", "caption": "missing file"},
            {"image": f"{prefix}0.png", "caption": " <i></i> "},
            {"caption": "no image field"},
            {"image": "trunc.png", "caption": "truncated"},
        ]
    path = folder / "data.json"
    path.write_text(json.dumps(records))
    return path


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def make_laion_tar(path: Path, start: int, n: int, *, bad: bool = True) -> Path:
    """An img2dataset-style shard: <key>.jpg, <key>.txt, <key>.json (+ bad samples when asked)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as archive:
        for i in range(start, start + n):
            key = f"{i:09d}"
            buffer = io.BytesIO()
            arr = (np.random.default_rng(i).random((32, 40, 3)) * 255).astype(np.uint8)
            Image.fromarray(arr).save(buffer, format="JPEG", quality=90)
            _add(archive, f"{key}.jpg", buffer.getvalue())
            if i % 2:
                _add(archive, f"{key}.txt", f"histology slide {i}".encode())
            _add(archive, f"{key}.json", json.dumps({"url": f"https://x/{i}.jpg", "key": key, "status": "success",
                                                     "caption": f"histology slide {i}", "width": 40, "height": 32}).encode())
        if bad:
            _add(archive, "bad_no_caption.jpg", b"\xff\xd8\xff")       # image, no caption field
            _add(archive, "bad_no_image.txt", b"caption without image")
            _add(archive, "bad_corrupt.jpg", b"not a jpeg at all")
            _add(archive, "bad_corrupt.txt", b"a caption")
            _add(archive, "bad_empty.jpg", buffer.getvalue())
            _add(archive, "bad_empty.txt", b"  ")
    return path
