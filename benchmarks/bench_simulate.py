"""Simulator speed: images per second, single process and with joblib workers.

Usage::

    python benchmarks/bench_simulate.py [--n 2048] [--difficulty medium] [--n-jobs 1 2] [--repeats 3]

Prints one JSON object per (difficulty, n_jobs) with the best of ``--repeats`` runs
(``images_per_s``) and the median. The target is >= 150 images/s per core on 'medium'.
Timings on a shared machine are noisy; the best run is the least disturbed one.
"""

import argparse
import json
import os
import time

import numpy as np

from lensclf import make_lenses


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2048, help="images per run (half lenses)")
    parser.add_argument("--difficulty", nargs="+", default=["medium"])
    parser.add_argument("--n-jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    make_lenses(32, 32, random_state=0)  # warm up imports and caches
    for difficulty in args.difficulty:
        for n_jobs in args.n_jobs:
            if n_jobs != 1:  # start the worker pool outside the timed runs
                make_lenses(64, 64, difficulty, random_state=0, n_jobs=n_jobs)
            rates = []
            for repeat in range(args.repeats):
                t0 = time.perf_counter()
                X, y = make_lenses(args.n // 2, args.n - args.n // 2, difficulty, random_state=repeat, n_jobs=n_jobs)
                rates.append(len(y) / (time.perf_counter() - t0))
            print(json.dumps({
                "difficulty": difficulty, "n_jobs": n_jobs, "n_images": args.n, "cpu_count": os.cpu_count(),
                "images_per_s": round(max(rates), 1), "images_per_s_median": round(float(np.median(rates)), 1),
            }), flush=True)


if __name__ == "__main__":
    main()
