"""Scoring inside a dask worker against the plain process: images/s and page faults, by batch size and heap.

A dask nanny starts each worker with ``MALLOC_TRIM_THRESHOLD_=65536``
(``distributed.nanny.pre-spawn-environ``). Setting that turns off glibc's
dynamic ``mmap`` threshold, so every activation buffer over 128 KiB is mapped,
zero-filled and unmapped again for every batch. This measures
``predict_proba`` over the same rows (a block read from a zarr store, as
``lensclf predict --scheduler`` reads it), with 2 torch threads:

- in this process (the main thread), with ``predict_batch_size`` 64 and 256;
- in the one worker of a ``LocalCluster(n_workers=1, threads_per_worker=1)``,
  with the worker's heap left to the nanny's setting, and with freed memory
  kept in the heap (``lensclf._dask.worker_settings``, what scoring tasks use);

each in interleaved rounds (the machine drifts), each worker measurement in a
freshly restarted worker (a retained heap, once left, leaves glibc's ``mmap``
threshold at 32 MiB, not at the nanny's state), with the minor page faults
the scoring took (``getrusage``) per image.

    python benchmarks/bench_worker_heap.py --out benchmarks/results/worker_heap.json
"""

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _harness import emit_json  # noqa: E402


def score_block(blob, digest, store, rows, batch_size, heap):
    """images/s and minor page faults per image of ``predict_proba`` over the first ``rows`` of ``store``."""
    import contextlib
    import resource
    import time

    import torch

    from lensclf import LensZarrArray
    from lensclf._dask import cached_model, worker_settings

    clf = cached_model(blob, digest)
    clf.set_params(predict_batch_size=batch_size)
    X = LensZarrArray(store)[:rows]
    context = worker_settings(heap=heap) if heap is not None else contextlib.nullcontext()
    with context:
        torch.set_num_threads(2)
        clf.predict_proba(X[:batch_size])  # warm
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        clf.predict_proba(X)
        seconds = time.perf_counter() - start
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return rows / seconds, faults / rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    from distributed import Client, LocalCluster

    from bench_predict_store import grow_store, model_and_files
    from lensclf import LensClassifier
    from lensclf._dask import model_blob

    with tempfile.TemporaryDirectory(prefix="bench-worker-heap-") as work:
        model, files, _ = model_and_files(work, 1000)
        store = os.path.join(work, "s.zarr")
        subprocess.run([sys.executable, "-m", "lensclf", "pack", files, "--out", store, "--quiet"], check=True)
        grow_store(store, args.rows)
        blob, digest = model_blob(LensClassifier.load(model))
        runs = {}

        def record(name, result):
            runs.setdefault(name, []).append([round(result[0], 1), round(result[1], 1)])
            print(name, runs[name][-1], flush=True)

        with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None) as cluster, Client(cluster) as client:
            for _ in range(args.rounds):
                for batch in (256, 64):
                    record(f"process, batch {batch}", score_block(blob, digest, store, args.rows, batch, None))
                    for heap in (False, True):
                        name = f"dask worker, batch {batch}, heap {'kept' if heap else 'as the nanny set it'}"
                        client.restart()  # a fresh worker: leaving retained_heap changes the thresholds found
                        future = client.submit(score_block, blob, digest, store, args.rows, batch, heap, pure=False)
                        record(name, future.result())
        result = {"rows": args.rows, "rounds": args.rounds, "columns": ["images_per_s", "minor_faults_per_image"],
                  "runs": runs,
                  "median_images_per_s": {k: round(float(np.median([r[0] for r in v])), 1) for k, v in runs.items()},
                  "median_faults_per_image": {k: round(float(np.median([r[1] for r in v])), 1)
                                              for k, v in runs.items()}}
    emit_json(result, args.out)


if __name__ == "__main__":
    main()
