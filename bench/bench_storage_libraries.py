"""Storage libraries for training shards, measured: webdataset vs mosaicml-streaming vs litdata vs ours.

Same samples for all (prepared-size JPEGs made from scikit-image's real images + captions). Per
library: write rate, raw read rate (bytes + caption, one process, no decode: decode costs the same
everywhere), and whether a shuffled epoch stopped mid-way and resumed from a saved state yields
exactly the uninterrupted sequence. Run it in a scratch environment that has the three libraries
(they are not project dependencies):

    python -m venv /tmp/libvenv && echo $(python -c 'import site;print(site.getsitepackages()[0])') \\
        > $(/tmp/libvenv/bin/python -c 'import site;print(site.getsitepackages()[0])')/shared.pth
    /tmp/libvenv/bin/pip install webdataset litdata; /tmp/libvenv/bin/pip install --no-deps mosaicml-streaming
    /tmp/libvenv/bin/pip install xxhash zstd python-snappy brotli catalogue
    OMP_NUM_THREADS=1 /tmp/libvenv/bin/python bench/bench_storage_libraries.py
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import publish  # noqa: E402


def make_samples(n: int) -> list[tuple[bytes, str]]:
    from skimage import data

    bases = [np.asarray(Image.fromarray(getattr(data, k)()).convert("RGB"))
             for k in ("camera", "astronaut", "immunohistochemistry", "retina", "coffee", "chelsea")]
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        base = bases[i % len(bases)]
        y, x = rng.integers(0, base.shape[0] // 3), rng.integers(0, base.shape[1] // 3)
        crop = Image.fromarray(base[y:, x:]).resize((448, 336), Image.BICUBIC)
        buffer = io.BytesIO()
        crop.save(buffer, format="JPEG", quality=90)
        out.append((buffer.getvalue(), f"figure {i}: a scientific image, panel {i % 7}"))
    return out


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def _resume_note(full, head, tail, state) -> str:
    """How a resumed sequence differs from the uninterrupted one."""
    if head + tail == full:
        return ""
    start = full.index(tail[0]) if tail and tail[0] in full else -1
    return (f"after {len(head)} samples the resumed reader continued at sample {start} of the epoch, "
            f"{len(tail)} samples instead of {len(full) - len(head)}; saved state {json.dumps(state, default=str)[:120]}")


def _stop_and_resume(make_loader, stop: int):
    """Read ``stop`` samples, save the loader's state, resume in a fresh loader: (head, tail, state)."""
    loader = make_loader()
    head = []
    for batch in loader:
        head.append(batch[0]["caption"])
        if len(head) == stop:
            break
    state = loader.state_dict()
    del loader
    resumed = make_loader()
    resumed.load_state_dict(state)
    return head, [batch[0]["caption"] for batch in resumed], state


# -- ours ---------------------------------------------------------------------------------

def ours(samples, tmp: Path, stop: int) -> dict:
    from data.shards.dataset import ShardDataset, ShardSampler
    from data.shards.manifest import Manifest
    from data.shards.order import StreamOrder
    import tarfile

    folder = tmp / "ours"
    folder.mkdir()

    def write():
        # what data.prepare writes, without its decode/resize step (the samples are prepared already)
        from data.shards.manifest import ShardInfo, file_sha256
        shards = []
        for s in range(0, len(samples), 500):
            path = folder / f"shard-{s // 500:06d}.tar"
            with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as archive:
                for i in range(s, min(s + 500, len(samples))):
                    for name, data in ((f"{i:09d}.jpg", samples[i][0]), (f"{i:09d}.txt", samples[i][1].encode())):
                        info = tarfile.TarInfo(name)
                        info.size = len(data)
                        archive.addfile(info, io.BytesIO(data))
            shards.append(ShardInfo(path, min(500, len(samples) - s), path.stat().st_size, file_sha256(path)))
        Manifest(folder / "manifest.json", shards, "bench", "unknown").save()

    _, write_s = timed(write)
    ds = ShardDataset([Manifest.load(folder)], transform=None)
    order = StreamOrder(ds.source_specs(), seed=0, lanes=8, shuffle_buffer=1000)

    def read_all(start_state=None, limit=None):
        sampler = ShardSampler(order, num_replicas=1, rank=0)
        if start_state:
            sampler.load_state_dict(start_state)
        sampler.set_epoch(0)
        seq = []
        for i in sampler:
            ds.image_bytes(i)
            ds.raw_caption(i)
            seq.append(i)
            if limit and len(seq) == limit:
                return seq, sampler.state_dict(consumed=limit)
        return seq, None

    (full, _), read_s = timed(read_all)
    head, state = read_all(limit=stop)
    tail, _ = read_all(start_state=state)
    return {"write_s": write_s, "read_s": read_s, "exact": head + tail == full, "n": len(full),
            "state": "global offset + order fingerprint (plain ints); any world size / worker count"}


# -- webdataset ----------------------------------------------------------------------------

def webdataset_lib(samples, tmp: Path, stop: int) -> dict:
    import webdataset as wds

    folder = tmp / "wds"
    folder.mkdir()

    def write():
        with wds.ShardWriter(str(folder / "shard-%06d.tar"), maxcount=500, verbose=0) as sink:
            for i, (img, cap) in enumerate(samples):
                sink.write({"__key__": f"{i:09d}", "jpg": img, "txt": cap})

    _, write_s = timed(write)
    urls = sorted(str(p) for p in folder.glob("*.tar"))

    def read_all():
        ds = wds.WebDataset(urls, shardshuffle=len(urls), seed=0, empty_check=False).shuffle(1000, seed=0)
        return [s["__key__"] for s in ds]

    full, read_s = timed(read_all)
    again = read_all()
    return {"write_s": write_s, "read_s": read_s, "exact": None, "n": len(full),
            "deterministic": full == again,
            "state": "none: no state_dict; a resume must re-read and discard the consumed samples"}


# -- litdata --------------------------------------------------------------------------------

def _lit_fn(item):
    return {"image": item[0], "caption": item[1]}


def litdata_lib(samples, tmp: Path, stop: int) -> dict:
    import litdata as ld

    out = tmp / "lit"

    def write():
        ld.optimize(fn=_lit_fn, inputs=samples, output_dir=str(out), chunk_bytes="16MB", num_workers=1,
                    mode="overwrite")

    _, write_s = timed(write)

    def loader():
        ds = ld.StreamingDataset(str(out), shuffle=True, seed=0)
        return ld.StreamingDataLoader(ds, batch_size=1, num_workers=0, collate_fn=lambda b: b)

    def read_all():
        return [b[0]["caption"] for b in loader()]

    full, read_s = timed(read_all)
    head, tail, state = _stop_and_resume(loader, stop)
    return {"write_s": write_s, "read_s": read_s, "exact": head + tail == full, "n": len(full),
            "resume_note": _resume_note(full, head, tail, state),
            "state": "StreamingDataLoader.state_dict (its docs: per-worker chunk positions, same world size and num_workers to resume; not measured here)"}


# -- mosaicml-streaming ---------------------------------------------------------------------

def mosaic_lib(samples, tmp: Path, stop: int) -> dict:
    from streaming import MDSWriter, StreamingDataLoader, StreamingDataset
    from streaming.base.util import clean_stale_shared_memory

    out = tmp / "mds"

    def write():
        with MDSWriter(out=str(out), columns={"image": "bytes", "caption": "str"}, size_limit="16mb") as writer:
            for img, cap in samples:
                writer.write({"image": img, "caption": cap})

    _, write_s = timed(write)

    def loader():
        clean_stale_shared_memory()
        ds = StreamingDataset(local=str(out), shuffle=True, shuffle_seed=0, batch_size=1, num_canonical_nodes=1)
        return ds, StreamingDataLoader(ds, batch_size=1, num_workers=0, collate_fn=lambda b: b)

    def read_all():
        ds, dl = loader()
        return [b[0]["caption"] for b in dl]

    full, read_s = timed(read_all)
    head, tail, state = _stop_and_resume(lambda: loader()[1], stop)
    return {"write_s": write_s, "read_s": read_s, "exact": head + tail == full, "n": len(full),
            "resume_note": _resume_note(full, head, tail, state),
            "state": "sample offset + num_canonical_nodes (its docs: elastic across world sizes; not measured here)"}


LIBS = {"ours (data.shards)": ours, "webdataset": webdataset_lib, "litdata": litdata_lib,
        "mosaicml-streaming": mosaic_lib}
DEPENDENCIES = {
    "ours (data.shards)": "none beyond the project's (tarfile, numpy)",
    "webdataset": "webdataset 1.0.2 + braceexpand (2 packages)",
    "litdata": "litdata 0.2.76 + lightning-utilities, boto3, botocore, s3transfer, jmespath, obstore, python-dateutil (8)",
    "mosaicml-streaming": "mosaicml-streaming 0.13.0 + 55 packages (boto3, azure-*, google-cloud-storage, oci, paramiko, ...) "
                          "and it pins transformers<4.58 and numpy<2.2: installing it downgrades this project's transformers 5.x",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--stop", type=int, default=777, help="resume point (samples consumed before the stop)")
    parser.add_argument("--out", default="docs/benchmarks/storage_libraries.md")
    args = parser.parse_args()
    samples = make_samples(args.samples)
    size = sum(len(i) for i, _ in samples) / 2**20
    rows = []
    for name, fn in LIBS.items():
        tmp = Path(tempfile.mkdtemp())
        try:
            result = fn(samples, tmp, args.stop)
            exact = {True: "yes", False: "NO", None: "n/a (no resume API)"}[result["exact"]]
            if result["exact"] is False:
                exact += f" ({result['resume_note']})"
            if "deterministic" in result:
                exact += f"; same seed, same order: {'yes' if result['deterministic'] else 'no'}"
            rows.append((name, f"{args.samples / result['write_s']:.0f}", f"{result['n'] / result['read_s']:.0f}",
                         exact, result["state"], DEPENDENCIES[name]))
        except Exception as exc:  # a library that fails here is a finding, not a crash
            traceback.print_exc()
            rows.append((name, "-", "-", f"failed: {type(exc).__name__}: {str(exc)[:120]}", "-", DEPENDENCIES[name]))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    load = os.getloadavg()[0]
    table = ("| library | write samples/s | raw read samples/s | resume mid-epoch exact | resume state | dependencies |\n"
             "| --- | ---: | ---: | --- | --- | --- |\n" + "\n".join("| " + " | ".join(r) + " |" for r in rows))
    text = f"""# Storage library for training shards: measured

{args.samples} samples ({size:.0f} MiB of 448x336 JPEG q90 made from scikit-image's real images, plus captions),
one process, no image decode (decode costs the same with every library), shuffled epoch, stop after
{args.stop} samples, save the state, resume in a fresh reader and compare with the uninterrupted epoch.
{os.cpu_count()}-core shared machine, load average {load:.1f}: rates are noisy (+-20 %).

{table}

Command: see the docstring of `bench/bench_storage_libraries.py` (a scratch venv with the three libraries).
"""
    publish(text, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
