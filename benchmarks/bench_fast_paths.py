"""Measure the CPU fast paths one by one: memory format per ResNet stage, fused optimizer, batch size.

    python benchmarks/bench_fast_paths.py --out benchmarks/_work/fast_paths.json

For each variant: training images/s (forward, backward and optimizer step on a
fixed batch) and inference images/s (``torch.inference_mode``, batch 256), at
the native 64x64 input (``--size`` for others). ``channels_last_stages=k`` runs
the first k of the five stages (stem, layer1 ... layer4) in channels-last
memory format and the rest in the default layout; the weights stay as they
are. ``--probes`` adds bfloat16 autocast and ``torch.compile``. Variants are interleaved and repeated (``--repeats``) so that drifts of the
machine hit all of them alike. Run it alone: other processes competing for the
cores distort PyTorch timings.
"""

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lensclf._models import LensNet  # noqa: E402


def forward(net, x, stages):
    x = (x - net.channel_mean) / net.channel_std
    if net.input_size is not None:
        x = torch.nn.functional.interpolate(x, size=(net.input_size,) * 2, mode="bilinear", align_corners=False)
    return net.run_backbone(x, channels_last_stages=stages).squeeze(-1)


def training_images_per_s(size, stages, fused, batch_size, steps, bf16=False, compiled=False):
    """Training images/s; ``bf16``: CPU autocast to bfloat16; ``compiled``: ``torch.compile`` (warm-up excluded)."""
    torch.manual_seed(0)
    net = LensNet(input_size=None if size == 64 else size)
    optimizer = torch.optim.Adam(net.parameters(), 1e-3, weight_decay=1e-4,
                                 **({"fused": True} if fused else {"foreach": True}))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    x, y = torch.rand(batch_size, 3, 64, 64), torch.randint(0, 2, (batch_size,)).float()
    model = torch.compile(lambda inputs: forward(net, inputs, stages)) if compiled else (
        lambda inputs: forward(net, inputs, stages))

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss_fn(logits.float(), y).backward()
        optimizer.step()

    for _ in range(3 if compiled else 2):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - start)


def inference_images_per_s(size, stages, batch_size=256, repeats=4):
    net = LensNet(input_size=None if size == 64 else size).eval()
    x = torch.rand(batch_size, 3, 64, 64)
    with torch.inference_mode():
        forward(net, x, stages)
        start = time.perf_counter()
        for _ in range(repeats):
            forward(net, x, stages)
    return repeats * batch_size / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--probes", action="store_true",
                        help="also measure bfloat16 autocast and torch.compile (needs a C++ compiler; slow to warm up)")
    parser.add_argument("--out")
    args = parser.parse_args()

    training = {}  # (stages, fused, batch) -> list of img/s
    inference = {}
    variants = [(k, True, 64, {}) for k in range(6)] + [
        (3, False, 64, {}), (0, False, 64, {}), (3, True, 128, {}), (0, True, 128, {})]
    if args.probes:
        variants += [(3, True, 64, {"bf16": True}), (0, True, 64, {"bf16": True}),
                     (3, True, 64, {"compiled": True}), (0, True, 64, {"compiled": True})]
    for _ in range(args.repeats):
        for stages, fused, batch, probe in variants:
            key = f"channels_last_stages={stages} fused={fused} batch={batch}" + "".join(f" {p}" for p in probe)
            training.setdefault(key, []).append(
                training_images_per_s(args.size, stages, fused, batch, args.steps, **probe))
            print(f"train {key}: {training[key][-1]:.1f} img/s", file=sys.stderr, flush=True)
        for stages in range(6):
            key = f"channels_last_stages={stages}"
            inference.setdefault(key, []).append(inference_images_per_s(args.size, stages))
            print(f"infer {key}: {inference[key][-1]:.1f} img/s", file=sys.stderr, flush=True)

    def summary(runs):
        return {key: {"mean": round(sum(v) / len(v), 1), "runs": [round(x, 1) for x in v]}
                for key, v in runs.items()}

    result = {"size": args.size, "threads": torch.get_num_threads(), "torch": torch.__version__,
              "training_images_per_s": summary(training), "inference_images_per_s": summary(inference)}
    print(json.dumps(result, indent=2))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
