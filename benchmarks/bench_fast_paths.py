"""Measure the CPU fast paths one by one: memory format per ResNet stage, fused optimizer, batch size.

    python benchmarks/bench_fast_paths.py --out benchmarks/_work/fast_paths.json

For each variant: training images/s (forward, backward and optimizer step on a
fixed batch) and inference images/s (``torch.inference_mode``, batch 256), at
the native 64x64 input (``--size`` for others). ``channels_last_stages=k`` runs
the first k of the five stages (stem, layer1 ... layer4) in channels-last
memory format and the rest in the default layout (it sets the library's
``CPU_CHANNELS_LAST_STAGES``); the weights stay as they are. ``--probes`` adds
bfloat16 autocast and ``torch.compile``. Variants are interleaved and repeated
(``--repeats``) so that drifts of the machine hit all of them alike. Run it alone: other processes competing for the
cores distort PyTorch timings.
"""

import argparse
import contextlib
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from lensclf import _models  # noqa: E402
from bench_throughput import emit_json, inference_images_per_s, training_images_per_s  # noqa: E402


@contextlib.contextmanager
def channels_last_stages(k):
    """Run LensNet with its first ``k`` stages in channels-last layout (the library's knob)."""
    saved = _models.CPU_CHANNELS_LAST_STAGES
    _models.CPU_CHANNELS_LAST_STAGES = k
    try:
        yield
    finally:
        _models.CPU_CHANNELS_LAST_STAGES = saved


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--probes", action="store_true",
                        help="also measure bfloat16 autocast and torch.compile (needs a C++ compiler; slow to warm up)")
    parser.add_argument("--out")
    args = parser.parse_args()

    training = {}  # variant name -> list of img/s
    inference = {}
    variants = [(k, True, 64, {}) for k in range(6)] + [
        (3, False, 64, {}), (0, False, 64, {}), (3, True, 128, {}), (0, True, 128, {})]
    if args.probes:
        variants += [(3, True, 64, {"bf16": True}), (0, True, 64, {"bf16": True}),
                     (3, True, 64, {"compiled": True}), (0, True, 64, {"compiled": True})]
    for _ in range(args.repeats):
        for stages, fused, batch, probe in variants:
            key = f"channels_last_stages={stages} fused={fused} batch={batch}" + "".join(f" {p}" for p in probe)
            with channels_last_stages(stages):
                speed = training_images_per_s(args.size, batch, args.steps, fused=fused, **probe)
            training.setdefault(key, []).append(speed)
            print(f"train {key}: {training[key][-1]:.1f} img/s", file=sys.stderr, flush=True)
        for stages in range(6):
            key = f"channels_last_stages={stages}"
            with channels_last_stages(stages):
                inference.setdefault(key, []).append(inference_images_per_s(args.size))
            print(f"infer {key}: {inference[key][-1]:.1f} img/s", file=sys.stderr, flush=True)

    def summary(runs):
        return {key: {"mean": round(sum(v) / len(v), 1), "runs": [round(x, 1) for x in v]}
                for key, v in runs.items()}

    result = {"size": args.size, "threads": torch.get_num_threads(), "torch": torch.__version__,
              "training_images_per_s": summary(training), "inference_images_per_s": summary(inference)}
    emit_json(result, args.out)


if __name__ == "__main__":
    main()
