"""Measure the CPU fast paths one by one: memory format per stage, fused optimizer, batch size, tap-wise convolutions, stem order, heap.

    python benchmarks/bench_fast_paths.py --out benchmarks/_work/fast_paths.json
    python benchmarks/bench_fast_paths.py --convolutions   # forward and backward pass per convolution shape

For each variant: training images/s (forward, backward and optimizer step on a
fixed batch) and inference images/s (``torch.inference_mode``, batch 256), at
the native 64x64 input (``--size`` for others). ``channels_last_stages=k`` runs
the first k of the five stages (stem, layer1 ... layer4) in channels-last
memory format and the rest in the default layout (it sets the library's
``CPU_CHANNELS_LAST_STAGES``); the weights stay as they are. ``taps=0`` turns
off the tap-wise convolutions of the small maps (``lensclf._conv``, by setting
``MAX_TAP_POSITIONS`` to 0); ``relu_first`` runs the stem's ReLU before its
max-pool, as torchvision does (``POOL_BEFORE_RELU`` off); ``heap=0`` trains
without :func:`lensclf._heap.retained_heap` (in the same process, after other
variants have used it, so under the thresholds it leaves behind, which fault
as much as glibc's own: ~11,000-27,000 page faults per step here).
``--probes`` adds bfloat16 autocast and ``torch.compile``. ``--convolutions``
times, instead, the forward and backward pass of each convolution shape of the
ResNet's last stages with torch's kernels and with the tap-wise ones. Variants are interleaved and repeated
(``--repeats``) so that drifts of the machine hit all of them alike. Run it alone: other processes competing for the
cores distort PyTorch timings.
"""

import argparse
import os
import sys
import time

import torch
from torch.nn import functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from lensclf import _conv, _models  # noqa: E402
from _harness import override  # noqa: E402
from bench_throughput import emit_json, inference_images_per_s, training_images_per_s  # noqa: E402


#: (in channels, out channels, input side, kernel, stride, padding): ResNet18's convolutions on
#: 64 px input (layer4: 2x2 output, layer3: 4x4) and on 96 px input (layer4: 3x3 output).
CONVOLUTIONS = [(512, 512, 2, 3, 1, 1), (256, 512, 4, 3, 2, 1), (256, 512, 4, 1, 2, 0),
                (256, 256, 4, 3, 1, 1), (512, 512, 3, 3, 1, 1), (256, 512, 6, 3, 2, 1)]


def _milliseconds(fn, repeats):
    for _ in range(3):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e3


def convolution_ms(batch=64, repeats=15):
    """Forward and backward pass (input and weight gradients) per convolution shape: torch's kernels and the taps.

    torch's forward runs on input in the default (NCHW) layout, as at the end of the ResNet's
    channels-last stages; the taps' forward includes copying the weight into tap order, as in training.
    """
    torch.manual_seed(0)
    rows = []
    for c_in, c_out, side, kernel, stride, padding in CONVOLUTIONS:
        x = torch.randn(batch, c_in, side, side)
        weight = torch.randn(c_out, c_in, kernel, kernel)
        grad = torch.randn_like(F.conv2d(x, weight, stride=stride, padding=padding))
        torch_fwd = _milliseconds(lambda: F.conv2d(x, weight, stride=stride, padding=padding), repeats)
        taps_fwd = _milliseconds(lambda: _conv.tap_conv_forward(x, weight, None, (stride, stride),
                                                                (padding, padding)), repeats)
        torch_ms = _milliseconds(lambda: torch.ops.aten.convolution_backward(
            grad, x, weight, None, [stride] * 2, [padding] * 2, [1, 1], False, [0, 0], 1,
            [True, True, False]), repeats)
        taps_ms = _milliseconds(lambda: _conv.tap_conv_backward(
            grad, x, weight, (stride, stride), (padding, padding)), repeats)
        out_side = grad.shape[-1]
        rows.append({"convolution": f"{c_in}->{c_out} {kernel}x{kernel} stride {stride}",
                     "output_map": f"{out_side}x{out_side}",
                     "forward_torch_ms": round(torch_fwd, 2), "forward_taps_ms": round(taps_fwd, 2),
                     "backward_torch_ms": round(torch_ms, 2), "backward_taps_ms": round(taps_ms, 2)})
        print(rows[-1], file=sys.stderr, flush=True)
    return {"batch": batch, "threads": torch.get_num_threads(), "torch": torch.__version__, "convolutions": rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--probes", action="store_true",
                        help="also measure bfloat16 autocast and torch.compile (needs a C++ compiler; slow to warm up)")
    parser.add_argument("--quick", action="store_true",
                        help="only the default and the default with one fast path off (taps, pool before ReLU, layout)")
    parser.add_argument("--convolutions", action="store_true",
                        help="time the forward and backward pass per convolution shape instead (torch's kernels vs taps)")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.convolutions:
        emit_json(convolution_ms(), args.out)
        return

    training = {}  # variant name -> list of img/s
    inference = {}
    variants = [(k, True, 64, {}) for k in range(6)] + [
        (3, False, 64, {}), (0, False, 64, {}), (3, True, 128, {}), (0, True, 128, {}),
        (3, True, 64, {"taps": False}), (0, True, 64, {"taps": False}), (3, True, 64, {"relu_first": True}),
        (3, True, 64, {"heap": False})]
    if args.quick:  # the default against each of its fast paths turned off
        variants = [(3, True, 64, {}), (3, True, 64, {"taps": False}), (3, True, 64, {"relu_first": True}),
                    (0, True, 64, {}), (3, True, 64, {"heap": False})]
    if args.probes:
        variants += [(3, True, 64, {"bf16": True}), (0, True, 64, {"bf16": True}),
                     (3, True, 64, {"compiled": True}), (0, True, 64, {"compiled": True})]
    for _ in range(args.repeats):
        for stages, fused, batch, probe in variants:
            key = f"channels_last_stages={stages} fused={fused} batch={batch}" + "".join(
                f" {name}={int(value)}" if name in ("taps", "heap") else f" {name}" for name, value in probe.items())
            probe = dict(probe)
            max_taps = _conv.MAX_TAP_POSITIONS if probe.pop("taps", True) else 0
            pool_first = not probe.pop("relu_first", False)
            with override(_models, "CPU_CHANNELS_LAST_STAGES", stages), \
                    override(_conv, "MAX_TAP_POSITIONS", max_taps), override(_models, "POOL_BEFORE_RELU", pool_first):
                speed = training_images_per_s(args.size, batch, args.steps, fused=fused, **probe)
            training.setdefault(key, []).append(speed)
            print(f"train {key}: {training[key][-1]:.1f} img/s", file=sys.stderr, flush=True)
        for stages in ([3] if args.quick else range(6)):
            key = f"channels_last_stages={stages}"
            with override(_models, "CPU_CHANNELS_LAST_STAGES", stages):
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
