"""Raw throughput on this machine: matrix-product GFLOP/s, ResNet training and inference images/s.

Run on a quiet machine (other processes competing for the cores slow PyTorch's
thread pool far more than their share):

    python benchmarks/bench_throughput.py --sizes 64 96 --out benchmarks/_work/throughput.json
"""

import argparse
import contextlib
import os
import sys
import time

import torch

from lensclf._net import _fused_supported
from lensclf._cpu import retained_heap
from lensclf._models import LensNet

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import emit_json  # noqa: E402


def matmul_gflops(n=2048, repeats=10):
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def training_images_per_s(size, batch_size=64, steps=6, fused=None, bf16=False, compiled=False, heap=True):
    """Training images/s of LensNet (forward, backward, Adam step) on a fixed batch.

    ``fused=None`` builds Adam as LensClassifier does (fused step where this torch
    has one); ``bf16`` autocasts to bfloat16 on CPU; ``compiled`` wraps the network
    in ``torch.compile`` (its compilation falls in the warm-up, not the timing);
    ``heap`` keeps freed memory in the heap while it trains, as ``fit`` does
    (:func:`lensclf._cpu.retained_heap`).
    """
    torch.manual_seed(0)
    net = LensNet(input_size=None if size == 64 else size, fast_paths=True)
    if fused is None:
        fused = _fused_supported(torch.optim.Adam, "cpu")
    optimizer = torch.optim.Adam(net.parameters(), 1e-3, weight_decay=1e-4,
                                 **({"fused": True} if fused else {"foreach": True}))
    model = torch.compile(net) if compiled else net
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


def inference_images_per_s(size, batch_size=256, repeats=4):
    net = LensNet(input_size=None if size == 64 else size, fast_paths=True).eval()
    x = torch.rand(batch_size, 3, 64, 64)
    with torch.inference_mode():
        net(x)
        start = time.perf_counter()
        for _ in range(repeats):
            net(x)
    return repeats * batch_size / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96])
    parser.add_argument("--out")
    args = parser.parse_args()
    result = {"threads": torch.get_num_threads(), "torch": torch.__version__,
              "matmul_gflops": round(matmul_gflops(), 1), "sizes": {}}
    for size in args.sizes:
        result["sizes"][size] = {"train_images_per_s": round(training_images_per_s(size), 1),
                                 "inference_images_per_s": round(inference_images_per_s(size), 1)}
    emit_json(result, args.out)


if __name__ == "__main__":
    main()
