"""`lensclf predict` over a zarr store: throughput against the in-memory rate, and peak memory against N.

1. A model is trained briefly on random 3x64x64 cutouts (its weights do not change the cost of scoring).
2. A store is made with ``lensclf pack`` from ``--k`` simulated cutout files, then grown to N rows by
   copying those rows, chunk-aligned, through zarr (same arrays, chunks and codec as a packed store;
   growing it costs minutes instead of writing N files).
3. Timed, each in a fresh process (peak RSS from ``/usr/bin/time``-style rusage of that process alone):
   - the in-memory rate: ``clf.predict_proba`` over an in-RAM array in chunks of PREDICT_CHUNK_SIZE,
     measured before and after the store runs (their mean is the reference: the machine drifts);
   - ``lensclf predict MODEL store.zarr --out scores.csv`` for each N in ``--n`` (its wall time
     includes the command's start-up, ~8 s of imports).

    python benchmarks/bench_predict_store.py --n 20000 200000 --out benchmarks/results/predict_store.json
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import zarr

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _harness import emit_json  # noqa: E402

from lensclf import LensClassifier, make_lenses  # noqa: E402
from lensclf.workflows import PREDICT_CHUNK_SIZE  # noqa: E402

_MEASURE = """
import resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.run(sys.argv[1:]).returncode
wall = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print({"rc": code, "wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime})
"""

_IN_MEMORY = """
import sys, time, numpy as np
from lensclf import LensClassifier
clf = LensClassifier.load(sys.argv[1], device="cpu")
X = np.load(sys.argv[2])
chunk = int(sys.argv[3])
start = time.perf_counter()
for s in range(0, len(X), chunk):
    clf.predict_proba(X[s:s + chunk])
print("RATE", len(X) / (time.perf_counter() - start))
"""


def measured(command):
    out = subprocess.run([sys.executable, "-c", _MEASURE, *command], capture_output=True, text=True, check=True)
    return eval(out.stdout.strip().splitlines()[-1]), out.stdout  # noqa: S307 - our own dict literal


def model_and_files(work, k):
    """A briefly trained model and ``k`` simulated cutout files in ``work``: ``(model path, folder, images)``."""
    X, y = make_lenses(n_lenses=k // 2, n_nonlenses=k - k // 2, random_state=0)
    model = os.path.join(work, "model.safetensors")
    LensClassifier(max_epochs=1, weights=None, verbose=0, random_state=0).fit(X[:256], y[:256]).save(model)
    files = os.path.join(work, "files")
    os.makedirs(files)
    for i, image in enumerate(X):
        np.save(os.path.join(files, f"{i}.npy"), image)
    return model, files, X


def grow_store(path, n):
    """Repeat the packed rows of the store ``path`` until it holds ``n`` rows (chunk-aligned copies)."""
    group = zarr.open_group(path, mode="r+")
    images, k = group["images"], group["images"].shape[0]
    chunk = images.chunks[0]
    block = images[: (k // chunk) * chunk]
    meta = {name: group[name][: len(block)] for name in ("source", "id", "label")}
    arrays = {name: group[name] for name in ("source", "id", "label")}
    for array in (images, *arrays.values()):
        array.resize((n, *array.shape[1:]))  # in place: the same objects are written below
    for start in range(len(block), n, len(block)):
        stop = min(start + len(block), n)
        images[start:stop] = block[: stop - start]
        for name, values in meta.items():
            arrays[name][start:stop] = values[: stop - start]
    group.attrs.update({"rows_done": n})
    last = (n - 1) % len(block)
    assert np.array_equal(images[n - 1], block[last]), "the grown store does not hold the packed rows"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[20_000, 200_000], help="store sizes")
    parser.add_argument("--k", type=int, default=2_000, help="distinct cutout files packed")
    parser.add_argument("--n-memory", type=int, default=20_000, help="rows of the in-memory measurement")
    parser.add_argument("--dir", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="bench-predict-store-", dir=args.dir)
    try:
        model, files, X = model_and_files(work, args.k)
        memory = os.path.join(work, "memory.npy")
        np.save(memory, np.concatenate([X] * (args.n_memory // len(X) + 1))[: args.n_memory])

        def in_memory_rate():
            for line in subprocess.run([sys.executable, "-c", _IN_MEMORY, model, memory, str(PREDICT_CHUNK_SIZE)],
                                       capture_output=True, text=True, check=True).stdout.splitlines():
                if line.startswith("RATE"):
                    return float(line.split()[1])

        # The machine's speed drifts by tens of percent over an hour, so the in-memory rate is measured
        # before and after the store runs and each store run is compared with their mean.
        before = in_memory_rate()
        result = {"in_memory_images_per_s_before": round(before, 1), "n_memory": args.n_memory, "k_files": args.k,
                  "chunk": PREDICT_CHUNK_SIZE, "stores": []}
        lensclf = [sys.executable, "-m", "lensclf"]
        for n in args.n:
            store = os.path.join(work, f"s{n}.zarr")
            start = time.perf_counter()
            subprocess.run([*lensclf, "pack", files, "--out", store, "--quiet"], check=True)
            pack_s = time.perf_counter() - start
            grow_store(store, n)
            csv = os.path.join(work, f"s{n}.csv")
            stats, _ = measured([*lensclf, "predict", model, store, "--out", csv, "--quiet"])
            assert stats["rc"] == 0, stats
            with open(csv) as handle:
                rows = sum(1 for _ in handle) - 1
            assert rows == n, (rows, n)
            result["stores"].append({
                "n": n, "pack_s_for_k_files": round(pack_s, 1), "predict_wall_s": round(stats["wall_s"], 1),
                "images_per_s": round(n / stats["wall_s"], 1),
                "peak_rss_mib": round(stats["peak_rss_mib"], 1), "cpu_s": round(stats["cpu_s"], 1),
            })
            print(json.dumps(result["stores"][-1]), flush=True)
            shutil.rmtree(store, ignore_errors=True)
        after = in_memory_rate()
        rate = (before + after) / 2
        result.update(in_memory_images_per_s_after=round(after, 1), in_memory_images_per_s=round(rate, 1))
        for row in result["stores"]:
            row["vs_in_memory"] = round(row["images_per_s"] / rate, 3)
        emit_json(result, args.out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
