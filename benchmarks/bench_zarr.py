"""Time packing cutout files into a zarr store (lensclf._zarr.pack_cutouts) and reading it back.

Writes N random float32 cutouts as ``.npy`` files and N_FITS as FITS files into a
temporary folder (not timed), then times:

- ``pack_cutouts`` of the ``.npy`` files and of the FITS files (cutouts/s);
- reading the whole ``.npy`` store back chunk by chunk through ``LensZarrArray``
  vs ``np.load`` of the same files one by one (images/s).

The files are read warm (just written; the page cache is not evicted). Prints one
JSON object (and writes it to ``--out`` if given). The temporary folder is removed.

Usage: ``python benchmarks/bench_zarr.py [--n 20000] [--n-fits 2000] [--size 64] [--dir /tmp] [--out FILE]``
"""

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time

import numpy as np
import zarr
from astropy.io import fits

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

from lensclf._zarr import LensZarrArray, pack_cutouts  # noqa: E402
from _harness import emit_json  # noqa: E402


def write_files(folder, n, shape, fmt, seed):
    os.makedirs(folder)
    rng = np.random.default_rng(seed)
    paths = []
    for k in range(n):
        image = rng.random(shape, dtype=np.float32)
        if fmt == "npy":
            path = os.path.join(folder, f"{k}.npy")
            np.save(path, image)
        else:
            path = os.path.join(folder, f"{k}.fits")
            fits.PrimaryHDU(image.astype(">f4")).writeto(path)
        paths.append(path)
    return paths


def folder_bytes(path):
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)


def time_pack(paths, out, threads):
    start = time.perf_counter()
    summary = pack_cutouts(paths, out, n_threads=threads)
    seconds = time.perf_counter() - start
    assert summary["rows_written"] == len(paths), summary
    return {
        "n": len(paths),
        "seconds": round(seconds, 3),
        "cutouts_per_s": round(len(paths) / seconds, 1),
        "input_mb": round(folder_bytes(os.path.dirname(paths[0])) / 1e6, 1),
        "store_mb": round(folder_bytes(out) / 1e6, 1),
    }


def time_read(paths, out):
    store = LensZarrArray(out)
    step = zarr.open_group(out, mode="r")["images"].chunks[0]
    start = time.perf_counter()
    total = 0.0
    for s in range(0, len(store), step):
        total += float(store[s:s + step][:, 0, 0, 0].sum())
    zarr_s = time.perf_counter() - start
    start = time.perf_counter()
    expected = 0.0
    for path in paths:
        expected += float(np.load(path)[0, 0, 0])
    npy_s = time.perf_counter() - start
    assert np.isclose(total, expected, rtol=1e-4), (total, expected)
    return {
        "chunk_rows": step,
        "zarr_seconds": round(zarr_s, 3),
        "zarr_images_per_s": round(len(paths) / zarr_s, 1),
        "np_load_seconds": round(npy_s, 3),
        "np_load_images_per_s": round(len(paths) / npy_s, 1),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help=".npy files (default 20000)")
    parser.add_argument("--n-fits", type=int, default=2_000, help="FITS files (default 2000)")
    parser.add_argument("--size", type=int, default=64, help="cutout side in pixels (3 bands; default 64)")
    parser.add_argument("--threads", type=int, default=None, help="reader threads (default: lensclf's)")
    parser.add_argument("--dir", default=None, help="where to create the temporary folder")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    shape = (3, args.size, args.size)
    root = tempfile.mkdtemp(prefix="bench_zarr_", dir=args.dir)
    try:
        npy = write_files(os.path.join(root, "npy"), args.n, shape, "npy", seed=0)
        fits_paths = write_files(os.path.join(root, "fits"), args.n_fits, shape, "fits", seed=1)
        result = {
            "benchmark": "bench_zarr",
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), python {platform.python_version()}",
            "shape": list(shape),
            "pack_npy": time_pack(npy, os.path.join(root, "npy.zarr"), args.threads),
            "pack_fits": time_pack(fits_paths, os.path.join(root, "fits.zarr"), args.threads),
            "read_npy_store": time_read(npy, os.path.join(root, "npy.zarr")),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    emit_json(result, args.out)


if __name__ == "__main__":
    main()
