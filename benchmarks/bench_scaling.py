"""Cost of each input scaling against one training step of the ResNet18, per batch of 64, on the CPU.

    python benchmarks/bench_scaling.py --out benchmarks/results/scaling.json

For each batch shape: milliseconds of ``standardize_per_image`` (``scaling="image"``)
and ``robust_stretch_per_image`` (``scaling="robust"``), and for scale one
training step (forward and backward) and one inference pass of ``LensNet``
(``scaling="image"``, CPU fast paths); median of ``--repeats`` runs after a
warm-up. Run it on a quiet machine.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lensclf._models import LensNet, robust_stretch_per_image, standardize_per_image  # noqa: E402


def _ms(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(1000 * float(np.median(times)), 2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    rows = []
    for shape in ((64, 3, 64, 64), (64, 5, 64, 64), (64, 1, 101, 101)):
        x = torch.randn(shape)
        row = {"batch": list(shape), "threads": torch.get_num_threads()}
        with torch.no_grad():
            row["image_ms"] = _ms(lambda: standardize_per_image(x), args.repeats)
            row["robust_ms"] = _ms(lambda: robust_stretch_per_image(x), args.repeats)
        net = LensNet(weights=None, in_channels=shape[1], scaling="image", fast_paths=True).train()

        def step():
            net.zero_grad(set_to_none=True)
            net(x).sum().backward()

        row["train_step_ms"] = _ms(step, args.repeats)
        net.eval()
        with torch.inference_mode():
            row["inference_ms"] = _ms(lambda: net(x), args.repeats)
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
