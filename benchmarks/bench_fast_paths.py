"""Measure the CPU fast paths: what ``cpu_fast_paths`` buys in a fit, and each trick alone.

    python benchmarks/bench_fast_paths.py --switch --out benchmarks/_work/switch.json   # fit: False / True / "retain_heap"
    python benchmarks/bench_fast_paths.py --out benchmarks/_work/fast_paths.json        # each trick, per training step
    python benchmarks/bench_fast_paths.py --convolutions   # forward and backward pass per convolution shape

``--switch`` times a short ``LensClassifier.fit`` (one epoch, no validation split, random 64x64 images) with
``cpu_fast_paths=False`` (torchvision's forward pass), ``True`` (the default) and ``"retain_heap"``. Each
measurement runs in a fresh process (a warm-up fit, then the timed one), because the heap setting is
process-wide; it reports images/s and the timed fit's minor page faults divided by its training steps.

The default mode times the tricks one by one, on a fixed batch: training images/s (forward, backward and optimizer
step) and inference images/s (``torch.inference_mode``, batch 256), at the native 64x64 input (``--size`` for
others). ``channels_last_stages=k`` runs the first k of the five stages (stem, layer1 ... layer4) in channels-last
memory format (``lensclf._cpu.resnet.resnet_forward``; the library's choice is ``CHANNELS_LAST_STAGES``);
``taps=0`` turns off the tap-wise convolutions of the small maps (``lensclf._cpu.conv``, by setting
``MAX_TAP_POSITIONS`` to 0); ``relu_first`` runs the stem's ReLU before its max-pool, as torchvision does;
``heap=1`` trains inside :func:`lensclf._cpu.retained_heap` (``cpu_fast_paths="retain_heap"``; in the same process
as the other variants, so they run under the thresholds it leaves behind); ``torchvision`` is LensNet with
``fast_paths=False``. ``--probes`` adds bfloat16 autocast and ``torch.compile``. Variants are interleaved and
repeated (``--repeats``) so that drifts of the machine hit all of them alike. ``--convolutions`` times, instead, the
forward and backward pass of each convolution shape of the ResNet's last stages with torch's kernels and with the
tap-wise ones.

Run it alone: other processes competing for the cores distort PyTorch timings.
"""

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch
from torch.nn import functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

from lensclf import LensClassifier  # noqa: E402
from lensclf._cpu import FAST_PATH_MODES, conv, resnet, retained_heap  # noqa: E402
from lensclf._models import LensNet  # noqa: E402
from lensclf._net import _fused_supported  # noqa: E402
from _harness import emit_json, override  # noqa: E402


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
        taps_fwd = _milliseconds(lambda: conv.tap_conv_forward(x, weight, None, (stride, stride),
                                                               (padding, padding)), repeats)
        torch_ms = _milliseconds(lambda: torch.ops.aten.convolution_backward(
            grad, x, weight, None, [stride] * 2, [padding] * 2, [1, 1], False, [0, 0], 1,
            [True, True, False]), repeats)
        taps_ms = _milliseconds(lambda: conv.tap_conv_backward(
            grad, x, weight, (stride, stride), (padding, padding)), repeats)
        out_side = grad.shape[-1]
        rows.append({"convolution": f"{c_in}->{c_out} {kernel}x{kernel} stride {stride}",
                     "output_map": f"{out_side}x{out_side}",
                     "forward_torch_ms": round(torch_fwd, 2), "forward_taps_ms": round(taps_fwd, 2),
                     "backward_torch_ms": round(torch_ms, 2), "backward_taps_ms": round(taps_ms, 2)})
        print(rows[-1], file=sys.stderr, flush=True)
    return {"batch": batch, "threads": torch.get_num_threads(), "torch": torch.__version__, "convolutions": rows}


# ----------------------------------------------------------------------------------- one trick at a time


def _network(size, stages, pool_first, fast):
    """A LensNet and the function its training and inference go through for this variant.

    ``fast=False``: LensNet's own forward with ``fast_paths=False`` (torchvision's). Otherwise the
    scaled input through :func:`lensclf._cpu.resnet_forward` with the given stages and stem order, which
    is what LensNet does with ``fast_paths=True`` for ``stages=CHANNELS_LAST_STAGES, pool_first=True``.
    """
    torch.manual_seed(0)
    net = LensNet(input_size=None if size == 64 else size, fast_paths=False)
    if not fast:
        return net, net

    def forward(x):
        return resnet.resnet_forward(net.backbone, net.scale(x), channels_last_stages=stages,
                                     pool_first=pool_first).squeeze(-1)

    return net, forward


def training_images_per_s(size, batch_size=64, steps=6, stages=resnet.CHANNELS_LAST_STAGES, pool_first=True,
                          fast=True, fused=True, bf16=False, compiled=False, heap=False):
    """Training images/s of LensNet (forward, backward, Adam step) on a fixed batch.

    ``fused`` uses torch's fused Adam where this torch has it (as LensClassifier does), else the
    per-tensor (foreach) one; ``bf16`` autocasts to bfloat16 on CPU; ``compiled`` wraps the forward
    function in ``torch.compile`` (its compilation falls in the warm-up, not the timing); ``heap`` trains
    inside :func:`lensclf._cpu.retained_heap`, as ``cpu_fast_paths="retain_heap"`` does.
    """
    net, forward = _network(size, stages, pool_first, fast)
    net.train()
    fused = fused and _fused_supported(torch.optim.Adam, "cpu")
    optimizer = torch.optim.Adam(net.parameters(), 1e-3, weight_decay=1e-4,
                                 **({"fused": True} if fused else {"foreach": True}))
    model = torch.compile(forward) if compiled else forward
    loss_fn = torch.nn.BCEWithLogitsLoss()
    x, y = torch.rand(batch_size, 3, 64, 64), torch.randint(0, 2, (batch_size,)).float()

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss_fn(logits.float(), y).backward()
        optimizer.step()

    with retained_heap() if heap else contextlib.nullcontext():
        for _ in range(3 if compiled else 2):
            step()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        return steps * batch_size / (time.perf_counter() - start)


def inference_images_per_s(size, stages=resnet.CHANNELS_LAST_STAGES, fast=True, batch_size=256, repeats=4):
    net, forward = _network(size, stages, True, fast)
    net.eval()
    x = torch.rand(batch_size, 3, 64, 64)
    with torch.inference_mode():
        forward(x)
        start = time.perf_counter()
        for _ in range(repeats):
            forward(x)
    return repeats * batch_size / (time.perf_counter() - start)


def _variant_key(variant):
    stages, fused, batch, probe = variant
    if probe.get("torchvision"):
        return f"torchvision fused={fused} batch={batch}"
    return f"channels_last_stages={stages} fused={fused} batch={batch}" + "".join(
        f" {name}={int(value)}" if name in ("taps", "heap") else f" {name}" for name, value in probe.items())


def tricks(args):
    """Training and inference images/s of each variant (the default mode)."""
    default = resnet.CHANNELS_LAST_STAGES
    batch = args.batch
    variants = [(k, True, batch, {}) for k in range(6)] + [
        (default, False, batch, {}), (0, False, batch, {}), (default, True, 2 * batch, {}), (0, True, 2 * batch, {}),
        (default, True, batch, {"taps": False}), (0, True, batch, {"taps": False}),
        (default, True, batch, {"relu_first": True}), (default, True, batch, {"heap": True}),
        (default, True, batch, {"torchvision": True})]
    if args.quick:  # the default against each of its fast paths turned off, the heap on, and torchvision
        variants = [(default, True, batch, {}), (default, True, batch, {"taps": False}),
                    (default, True, batch, {"relu_first": True}), (0, True, batch, {}),
                    (default, True, batch, {"heap": True}), (default, True, batch, {"torchvision": True})]
    if args.probes:
        variants += [(default, True, batch, {"bf16": True}), (0, True, batch, {"bf16": True}),
                     (default, True, batch, {"compiled": True}), (0, True, batch, {"compiled": True})]
    inference_variants = ([(default, True), (default, False)] if args.quick
                          else [(k, True) for k in range(6)] + [(default, False)])
    training, inference = {}, {}  # variant name -> list of img/s
    for _ in range(args.repeats):
        for variant in variants:
            stages, fused, batch_size, probe = variant
            key = _variant_key(variant)
            probe = dict(probe)
            max_taps = conv.MAX_TAP_POSITIONS if probe.pop("taps", True) else 0
            pool_first = not probe.pop("relu_first", False)
            fast = not probe.pop("torchvision", False)
            with override(conv, "MAX_TAP_POSITIONS", max_taps):
                speed = training_images_per_s(args.size, batch_size, args.steps, stages=stages, pool_first=pool_first,
                                              fast=fast, fused=fused, **probe)
            training.setdefault(key, []).append(speed)
            print(f"train {key}: {speed:.1f} img/s", file=sys.stderr, flush=True)
        for stages, fast in inference_variants:
            key = f"channels_last_stages={stages}" if fast else "torchvision"
            speed = inference_images_per_s(args.size, stages=stages, fast=fast, batch_size=args.inference_batch)
            inference.setdefault(key, []).append(speed)
            print(f"infer {key}: {speed:.1f} img/s", file=sys.stderr, flush=True)
    return {"size": args.size, "batch": batch, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "training_images_per_s": _summary(training), "inference_images_per_s": _summary(inference)}


def _summary(runs):
    return {key: {"mean": round(sum(v) / len(v), 1), "runs": [round(x, 1) for x in v]} for key, v in runs.items()}


# ----------------------------------------------------------------------------------- the switch, in a fit


def _mode_name(mode):
    return mode if isinstance(mode, str) else str(bool(mode))


def _parse_mode(text):
    return {"True": True, "False": False}.get(text, text)


def fit_once(mode, n, size, batch_size):
    """In this process: a warm-up fit, then a timed one-epoch fit with ``cpu_fast_paths=mode``."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 3, size, size), dtype=np.float32)
    y = np.arange(n) % 2
    params = dict(max_epochs=1, valid_size=None, batch_size=batch_size, verbose=0, random_state=0, device="cpu",
                  cpu_fast_paths=mode)
    LensClassifier(**params).fit(X[: 2 * batch_size], y[: 2 * batch_size])  # warm-up: threads, allocator, kernels
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    LensClassifier(**params).fit(X, y)
    seconds = time.perf_counter() - start
    steps = max(n // batch_size, 1)
    return {"cpu_fast_paths": _mode_name(mode), "images_per_s": n / seconds, "fit_s": seconds,
            "minor_faults_per_step": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps}


def switch(args):
    """A one-epoch fit per ``cpu_fast_paths`` value, each in a fresh process, interleaved and repeated."""
    modes = (False, True, "retain_heap")
    assert set(map(_mode_name, modes)) == set(map(_mode_name, FAST_PATH_MODES))
    runs = {_mode_name(mode): [] for mode in modes}
    for _ in range(args.repeats):
        for mode in modes:
            command = [sys.executable, os.path.abspath(__file__), "--fit-once", _mode_name(mode), "--n", str(args.n),
                       "--size", str(args.size), "--batch", str(args.batch)]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                sys.stderr.write(result.stderr)
                raise SystemExit(f"the fit with cpu_fast_paths={_mode_name(mode)} failed (exit {result.returncode})")
            record = json.loads(result.stdout)
            runs[record["cpu_fast_paths"]].append(record)
            print(f"fit cpu_fast_paths={record['cpu_fast_paths']}: {record['images_per_s']:.1f} img/s, "
                  f"{record['minor_faults_per_step']:.0f} minor faults per step", file=sys.stderr, flush=True)
    summary = {}
    for name, records in runs.items():
        speeds = [r["images_per_s"] for r in records]
        summary[name] = {"images_per_s_mean": round(sum(speeds) / len(speeds), 1),
                         "images_per_s": [round(s, 1) for s in speeds],
                         "minor_faults_per_step": [round(r["minor_faults_per_step"]) for r in records]}
    plain = summary["False"]["images_per_s_mean"]
    for name in summary:
        summary[name]["speed_vs_False"] = round(summary[name]["images_per_s_mean"] / plain, 3)
    return {"n_images": args.n, "size": args.size, "batch": args.batch, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "fit": summary}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:5]))
    parser.add_argument("--switch", action="store_true",
                        help="time a one-epoch fit with cpu_fast_paths=False, True and 'retain_heap' "
                             "(each in a fresh process)")
    parser.add_argument("--n", type=int, default=3200, help="--switch: training images per fit")
    parser.add_argument("--size", type=int, default=64,
                        help="input side: the network's input_size per step (the batch stays 64x64), "
                             "or the image side of --switch")
    parser.add_argument("--batch", type=int, default=64, help="training batch size")
    parser.add_argument("--inference-batch", type=int, default=256, help="inference batch size")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8, help="timed training steps per variant")
    parser.add_argument("--probes", action="store_true",
                        help="also measure bfloat16 autocast and torch.compile (needs a C++ compiler; slow to warm up)")
    parser.add_argument("--quick", action="store_true",
                        help="only the default, the default with one fast path off (taps, pool before ReLU, "
                             "layout), the heap on, and torchvision's forward")
    parser.add_argument("--convolutions", action="store_true",
                        help="time the forward and backward pass per convolution shape instead (torch's kernels vs taps)")
    parser.add_argument("--fit-once", metavar="MODE", help=argparse.SUPPRESS)  # the child process of --switch
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.fit_once is not None:
        print(json.dumps(fit_once(_parse_mode(args.fit_once), args.n, args.size, args.batch)))
    elif args.convolutions:
        emit_json(convolution_ms(), args.out)
    elif args.switch:
        emit_json(switch(args), args.out)
    else:
        emit_json(tricks(args), args.out)


if __name__ == "__main__":
    main()
