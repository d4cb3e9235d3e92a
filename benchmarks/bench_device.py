"""Throughput of LensClassifier's fit and predict on one device (for a GPU check; CPU works too).

    python benchmarks/bench_device.py --device cuda --n 20000 --out benchmarks/_work/device.json

Simulates ``--n`` medium cutouts in memory, then measures: one training epoch of
the default estimator (images/s, the whole fit loop), ``predict_proba`` with and
without TTA, and the host-to-device copy of one training batch from pageable and
from pinned memory (synchronous and ``non_blocking``), which is what the data
loaders' ``pin_memory`` buys.
"""

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lensclf import LensClassifier, make_lenses  # noqa: E402
from _harness import emit_json  # noqa: E402


def synchronize(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def copy_ms(device, batch, pinned, non_blocking, repeats=50):
    x = torch.rand(batch, 3, 64, 64)
    if pinned:
        x = x.pin_memory()
    x.to(device)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        x.to(device, non_blocking=non_blocking)
    synchronize(device)
    return (time.perf_counter() - start) / repeats * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out")
    args = parser.parse_args()
    X, y = make_lenses(args.n // 2, args.n // 2, difficulty="medium", random_state=0, n_jobs=os.cpu_count())[:2]
    X = np.ascontiguousarray(X, dtype=np.float32)
    result = {"torch": torch.__version__, "n": len(X), "threads": torch.get_num_threads()}

    LensClassifier(max_epochs=1, valid_size=None, verbose=0, device=args.device,
                   random_state=0).fit(X[:512], y[:512])  # warm-up
    clf = LensClassifier(max_epochs=args.epochs, valid_size=None, verbose=0, device=args.device, random_state=0)
    start = time.perf_counter()
    clf.fit(X, y)
    synchronize(clf.device_)
    fit_s = time.perf_counter() - start
    result.update(device=clf.device_, fit_s=fit_s, fit_images_per_s=args.epochs * len(X) / fit_s)
    if clf.device_.startswith("cuda"):
        result["gpu"] = torch.cuda.get_device_name()
    for tta in (False, True):
        clf.set_params(tta=tta)
        clf.predict_proba(X[:256])
        start = time.perf_counter()
        clf.predict_proba(X)
        result[f"predict_images_per_s_tta_{tta}"] = len(X) / (time.perf_counter() - start)
    if clf.device_.startswith("cuda"):
        result["batch64_copy_ms"] = {
            f"pinned={pinned} non_blocking={nb}": copy_ms(clf.device_, 64, pinned, nb)
            for pinned in (False, True) for nb in (False, True)}
    emit_json(result, args.out)


if __name__ == "__main__":
    main()
