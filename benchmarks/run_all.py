"""All of issue 5's benchmarks in one run, on one machine, reported as ratios with PASS/FAIL.

    python benchmarks/run_all.py --scale full --out benchmarks/results.json     # the issue's sizes
    python benchmarks/run_all.py --scale small --out /tmp/smoke.json            # ~2 minutes, smoke run only

Writes a simulated DeepLense-layout set (``write_lens_dir``, medium) to a temporary
folder, then measures: (1) loading, (2) training throughput vs the notebook
pipeline (benchmarks/notebook_pipeline.py), (3) inference throughput and the peak
memory of ``lensclf predict`` over a memory-mapped stack, (4) the machine's
matmul limit and ResNet18 FLOPs, (5) time to quality within a wall-clock budget.
Writes the JSON (``--out``) and a Markdown table next to it (``.md``). Run it alone:
PyTorch timings collapse when another process competes for the cores.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from skorch.callbacks import Callback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

from lensclf import LensClassifier, load_lens_dir, write_lens_dir  # noqa: E402
from lensclf._cpu import conv as _conv  # noqa: E402
from lensclf._models import LensNet  # noqa: E402

import bench_loading  # noqa: E402
from _harness import add_callback, current_auc, override  # noqa: E402
import bench_throughput  # noqa: E402
import notebook_pipeline  # noqa: E402

SCALES = {
    # train files per class, test files per class, images for the lensclf throughput fit,
    # notebook throughput batches, inference images, predict stack size, budget seconds
    "small": dict(train_per_class=500, test_per_class=150, fit_n=512, notebook_batches=2,
                  inference_n=512, stack_n=2_000, budget_s=20, matmul_n=1024),
    "full": dict(train_per_class=10_000, test_per_class=2_000, fit_n=10_000, notebook_batches=20,
                 inference_n=5_000, stack_n=200_000, budget_s=600, matmul_n=2048),
}
GIB = 1024**3


def timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# 1. Loading ---------------------------------------------------------------------------------------

def bench_loading_step(root, epochs=5, batch_size=64):
    out = {"evict_method": bench_loading.evict_page_cache(root)}
    out["cold_evict_worked"] = out["evict_method"] == "drop_caches"
    out["load_lens_dir_cold_s"], (X, y) = timed(lambda: load_lens_dir(root))
    out["n_files"] = int(len(X))
    out["load_lens_dir_warm_s"], _ = timed(lambda: load_lens_dir(root))
    bench_loading.evict_page_cache(root)
    # The notebook way: np.load in Dataset.__getitem__, DataLoader(batch_size=64), 5 epochs.
    epoch_s = bench_loading.notebook_epochs(root, epochs, batch_size)
    out["notebook_epoch_s"] = epoch_s
    out["notebook_epochs"] = epochs
    out["notebook_total_s"] = sum(epoch_s)
    out["ratio_notebook_over_lensclf"] = out["notebook_total_s"] / out["load_lens_dir_cold_s"]
    return out, X, y


# 2. Training throughput -----------------------------------------------------------------------------

def bench_training(X, y, root, n, notebook_batches, matmul_n):
    rng = np.random.default_rng(0)
    idx = rng.choice(len(X), size=min(n, len(X)), replace=False)
    Xn, yn = np.ascontiguousarray(X[idx]), y[idx]
    # Warm-up fit (thread pools, allocator, first-call costs), then the timed one-epoch fit.
    LensClassifier(max_epochs=1, valid_size=None, verbose=0, random_state=0).fit(Xn[:256], yn[:256])
    clf = LensClassifier(max_epochs=1, valid_size=None, verbose=0, random_state=0)
    before = _matmul_best(matmul_n)  # the machine's state just before and after the timed fit
    fit_s, _ = timed(lambda: clf.fit(Xn, yn))
    after = _matmul_best(matmul_n)
    out = {"lensclf_images": int(len(Xn)), "lensclf_fit_s": fit_s, "lensclf_images_per_s": len(Xn) / fit_s,
           "matmul_gflops_before_after": [before, after]}
    # The notebook pipeline: one warm-up batch, then the timed batches (data reading, transforms, step).
    notebook_pipeline.train_notebook(root, max_batches=1)
    _, stats = notebook_pipeline.train_notebook(root, max_batches=notebook_batches)
    out.update(notebook_images=stats["images"], notebook_train_s=stats["train_s"],
               notebook_images_per_s=stats["images"] / stats["train_s"])
    out["ratio_lensclf_over_notebook"] = out["lensclf_images_per_s"] / out["notebook_images_per_s"]
    return out, clf


# 3. Inference and predict memory -------------------------------------------------------------------

def bench_inference(clf, X, n):
    Xn = np.ascontiguousarray(X[:n])
    clf.set_params(tta=False)
    clf.predict_proba(Xn[:64])  # warm-up
    s, _ = timed(lambda: clf.predict_proba(Xn))
    n_tta = max(64, n // 8)
    clf.set_params(tta=True)
    s_tta, _ = timed(lambda: clf.predict_proba(Xn[:n_tta]))
    clf.set_params(tta=False)
    return {"images": int(len(Xn)), "images_per_s": len(Xn) / s,
            "tta_images": int(n_tta), "tta_images_per_s": n_tta / s_tta}


def write_stack(path, X, n, chunk=10_000):
    """Write an (n, C, H, W) float32 stack chunk by chunk (cycling through X) through a memory map."""
    stack = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n,) + X.shape[1:])
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        rows = np.arange(start, stop) % len(X)
        stack[start:stop] = X[rows]
        stack.flush()
    del stack


_PEAK_RSS = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "rc = subprocess.run(sys.argv[1:]).returncode; "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t, rc)")


def predict_peak(model_path, stack_path, csv_path):
    """Peak resident memory (bytes) and wall time of `lensclf predict` in its own process."""
    command = [sys.executable, "-c", _PEAK_RSS, sys.executable, "-m", "lensclf", "predict", model_path,
               stack_path, "--out", csv_path, "--quiet", "--overwrite"]
    env = dict(os.environ, PYTHONPATH=os.path.join(HERE, "..") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    kib, seconds, rc = done.stdout.split()
    if int(rc) != 0:
        raise RuntimeError(f"lensclf predict failed ({rc}): {done.stderr[-2000:]}")
    return int(kib) * 1024, float(seconds)


def bench_predict_memory(clf, X, work, n):
    model_path = os.path.join(work, "model.lensclf")
    clf.save(model_path)
    out = {}
    for label, count in (("tenth", max(1, n // 10)), ("full", n)):
        stack_path = os.path.join(work, f"stack_{count}.npy")
        write_stack(stack_path, X, count)
        peak, seconds = predict_peak(model_path, stack_path, os.path.join(work, f"scores_{count}.csv"))
        with open(os.path.join(work, f"scores_{count}.csv")) as f:
            rows = sum(1 for _ in f) - 1
        out[label] = {"n": count, "peak_rss_bytes": peak, "peak_rss_gib": peak / GIB, "wall_s": seconds,
                      "csv_rows": rows, "images_per_s_incl_startup": count / seconds}
        os.remove(stack_path)
    out["peak_growth_ratio"] = out["full"]["peak_rss_bytes"] / out["tenth"]["peak_rss_bytes"]
    return out


# 4. The machine's limit --------------------------------------------------------------------------

def forward_flops(model, size, taps=False):
    """FLOPs of one inference image; ``taps`` as in :func:`training_flops`."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with override(_conv, "MAX_TAP_POSITIONS", _conv.MAX_TAP_POSITIONS if taps else 0), \
            torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 3, size, size))
    return int(counter.get_total_flops())


def training_flops(model, size, batch=2, taps=False):
    """FLOPs of one training image: forward and backward as counted (no input gradient is needed).

    ``taps=False`` counts the model's FLOPs, every convolution computed by torch over its
    padded input (the usual count, a property of the network); ``taps=True`` counts the
    multiply-adds lensclf executes, whose tap-wise convolutions skip the products with
    layer4's zero padding (``lensclf._cpu.conv``).
    """
    from torch.utils.flop_counter import FlopCounterMode

    model.train()
    with override(_conv, "MAX_TAP_POSITIONS", _conv.MAX_TAP_POSITIONS if taps else 0), \
            FlopCounterMode(display=False) as counter:
        model(torch.rand(batch, 3, size, size)).sum().backward()
    return int(counter.get_total_flops()) // batch


def _matmul_best(n, runs=3, repeats=20):
    """Best of ``runs`` timings of ``repeats`` float32 products of two n x n matrices (GFLOP/s)."""
    return max(bench_throughput.matmul_gflops(n=n, repeats=repeats) for _ in range(runs))


def bench_limit(matmul_n, earlier=()):
    """The matmul limit: the best rate seen in this run (here and in ``earlier`` readings, e.g.
    those taken around the training measurement), so that a momentarily slow reading does not
    inflate the fractions; and the FLOPs of a ResNet18 pass."""
    from torchvision.models import resnet18

    here = _matmul_best(matmul_n)
    return {
        "matmul_n": matmul_n,
        "matmul_gflops_readings": [here, *earlier],
        "matmul_gflops": max([here, *earlier]),
        "lensclf_forward_flops_64": forward_flops(LensNet(fast_paths=True), 64),
        "lensclf_forward_flops_64_executed": forward_flops(LensNet(fast_paths=True), 64, taps=True),
        "lensclf_training_flops_64": training_flops(LensNet(fast_paths=True), 64),
        "lensclf_training_flops_64_executed": training_flops(LensNet(fast_paths=True), 64, taps=True),
        "resnet18_forward_flops_64": forward_flops(resnet18(weights=None), 64),
        "resnet18_forward_flops_224": forward_flops(resnet18(weights=None), 224),
        "resnet18_training_flops_224": training_flops(resnet18(weights=None), 224),
    }


# 5. Time to quality ---------------------------------------------------------------------------------

class _Budget(Callback):
    """Score the current weights on the test set at the training seconds in ``check_times`` and
    at each epoch end; stop when the budget is spent (or, with ``stop_auc``, once a check reaches it).

    The clock counts training only: the test-set scoring done here is subtracted.
    Raising KeyboardInterrupt ends skorch's fit; LensClassifier keeps the best weights.
    """

    def __init__(self, start, budget_s, check_times, X_test, y_test, records, stop_auc=None):
        self.start, self.budget_s, self.check_times = start, budget_s, sorted(check_times)
        self.X_test, self.y_test, self.records = X_test, y_test, records
        self.stop_auc = stop_auc
        self.excluded = 0.0
        self.images = 0
        self.next_index = 0  # the next entry of check_times

    def elapsed(self):
        return time.perf_counter() - self.start - self.excluded

    def record(self, net, when, **extra):
        train_s = self.elapsed()
        t0 = time.perf_counter()
        auc = current_auc(net.module_, self.X_test, self.y_test)
        self.records.append({"train_s": train_s, "images": self.images, "when": when, "test_auc": auc, **extra})
        self.excluded += time.perf_counter() - t0

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        if not training:
            return
        self.images += len(batch[0])
        now = self.elapsed()
        if now >= self.budget_s:
            raise KeyboardInterrupt
        if self.next_index < len(self.check_times) and now >= self.check_times[self.next_index]:
            self.record(net, "check")
            while self.next_index < len(self.check_times) and self.check_times[self.next_index] <= now:
                self.next_index += 1
            if self.stop_auc is not None and self.records[-1]["test_auc"] >= self.stop_auc:
                raise KeyboardInterrupt

    def on_epoch_end(self, net, **kwargs):
        self.record(net, "epoch_end", epoch=len(net.history), valid_auc=net.history[-1].get("valid_auc"))


def _train_lensclf_on_the_clock(root, budget_s, check_times, X_test, y_test, seed, stop_auc=None):
    """lensclf's default (``random_state=seed``) trained for ``budget_s`` seconds, the clock
    including reading the folder; returns the budget callback (records, images, elapsed) and the
    fitted classifier, or None when the budget ended before the first epoch."""
    records = []
    start = time.perf_counter()
    X, y = load_lens_dir(root)
    clf = LensClassifier(max_epochs=10_000, verbose=0, random_state=seed)
    budget = _Budget(start, budget_s, check_times, X_test, y_test, records, stop_auc=stop_auc)
    add_callback(clf, "budget", budget)
    try:
        clf.fit(X, y)
    except KeyboardInterrupt:  # the budget ended before the first epoch
        clf = None
    return budget, clf


def _first_reaching(records, target):
    reached = [r for r in records if r["test_auc"] >= target]
    return reached[0] if reached else None


def bench_time_to_quality(root, budget_s, X_test, y_test, checks=40, fine_checks=120, fine_until=0.2,
                          notebook_checks=4, seeds=(0, 1, 2)):
    """Both pipelines train for ``budget_s`` seconds; the test AUC of their current weights is
    taken every ``budget_s / checks`` training seconds (lensclf; every ``budget_s / fine_checks``
    during the first ``fine_until`` of the budget, where the notebook's final AUC is reached) and
    every ``budget_s / notebook_checks`` (notebook, slower to score), with the scoring time left
    off the clock.

    lensclf's early learning curve varies from seed to seed (its default is ``random_state=None``),
    so the time to reach the notebook's final AUC is measured for each of ``seeds`` and reported
    with its median; the first seed trains for the whole budget, the others stop once they reach it.
    """
    check_every_s, fine_every_s = budget_s / checks, budget_s / fine_checks
    check_times = sorted({round(check_every_s * i, 6) for i in range(1, checks + 1)}
                         | {round(fine_every_s * i, 6) for i in range(1, int(fine_until * fine_checks) + 1)})
    out = {"budget_s": budget_s, "check_every_s": check_every_s, "fine_check_every_s": fine_every_s,
           "fine_checks_until_s": fine_until * budget_s, "seeds": list(seeds)}
    budget, clf = _train_lensclf_on_the_clock(root, budget_s, check_times, X_test, y_test, seeds[0])
    if clf is not None:
        out["lensclf_test_auc"] = roc_auc_score(y_test, clf.predict_proba(X_test)[:, 1])  # best epoch's weights
        out["lensclf_best_epoch"] = clf.best_epoch_
    else:
        out["lensclf_test_auc"] = None
    out["lensclf_train_s"] = budget.elapsed()
    out["lensclf_images_seen"] = budget.images
    out["lensclf_checks"] = budget.records
    del clf

    # The notebook pipeline, same budget; test AUC of its weights at the end of the budget.
    nb_records = []

    def on_check(model, images, train_s):
        s, labels = notebook_pipeline.notebook_scores(model, root)
        nb_records.append({"train_s": train_s, "images": images, "test_auc": roc_auc_score(labels, s)})

    _, stats = notebook_pipeline.train_notebook(root, budget_s=budget_s, check_every_s=budget_s / notebook_checks,
                                                on_check=on_check)
    out["notebook_test_auc"] = nb_records[-1]["test_auc"]
    out["notebook_train_s"] = stats["train_s"]
    out["notebook_images_seen"] = stats["images"]
    out["notebook_checks"] = nb_records

    target = out["notebook_test_auc"]
    by_seed = {seeds[0]: budget.records}
    for seed in seeds[1:]:
        log(f"   lensclf seed {seed}, until it reaches the notebook's AUC {target:.3f}")
        other, _ = _train_lensclf_on_the_clock(root, budget_s, check_times, X_test, y_test, seed,
                                               stop_auc=target)
        by_seed[seed] = other.records
    first = {seed: _first_reaching(records, target) for seed, records in by_seed.items()}
    out["lensclf_checks_by_seed"] = {str(seed): records for seed, records in by_seed.items() if seed != seeds[0]}
    out["lensclf_s_to_notebook_auc_by_seed"] = {str(seed): r and r["train_s"] for seed, r in first.items()}
    reached = first[seeds[0]]
    out["lensclf_s_to_notebook_auc"] = reached and reached["train_s"]
    out["lensclf_images_to_notebook_auc"] = reached and reached["images"]
    # Median over seeds; a seed that never reached the target counts as the whole budget and more.
    median = statistics.median(r["train_s"] if r else float("inf") for r in first.values())
    out["lensclf_s_to_notebook_auc_median"] = None if median == float("inf") else median
    out["lensclf_compute_fraction_to_notebook_auc"] = (
        None if median == float("inf") else median / budget_s)
    return out


# Report -------------------------------------------------------------------------------------------

def verdict(ok):
    return "PASS" if ok else "FAIL"


def summarise(r, scale):
    rows = []
    L, T, I, P, M, Q = (r[k] for k in ("loading", "training", "inference", "predict_memory", "limit", "quality"))

    def of_limit(images_per_s, flops_per_image):
        return images_per_s * flops_per_image / (M["matmul_gflops"] * 1e9)

    train_frac = of_limit(T["lensclf_images_per_s"], M["lensclf_training_flops_64"])
    infer_frac = of_limit(I["images_per_s"], M["lensclf_forward_flops_64"])
    nb_frac = of_limit(T["notebook_images_per_s"], M["resnet18_training_flops_224"])
    r["ratios"] = {"training_fraction_of_matmul": train_frac, "inference_fraction_of_matmul": infer_frac,
                   "notebook_training_fraction_of_matmul": nb_frac,
                   "training_lensclf_over_notebook": T["ratio_lensclf_over_notebook"],
                   "loading_notebook_over_lensclf": L["ratio_notebook_over_lensclf"],
                   "predict_peak_growth_n_over_n10": P["peak_growth_ratio"]}
    cold = "" if L["cold_evict_worked"] else " (page cache NOT dropped: fadvise fallback)"
    rows.append(("Loading %d files, cold%s" % (L["n_files"], cold), f"{L['load_lens_dir_cold_s']:.2f} s",
                 "< 30 s (20,000 files)", verdict(L["load_lens_dir_cold_s"] < 30 * L["n_files"] / 20_000)))
    rows.append((f"Loading vs notebook ({L['notebook_epochs']} epochs of np.load per item)",
                 f"{L['ratio_notebook_over_lensclf']:.1f}x faster ({L['notebook_total_s']:.1f} s)", "info", ""))
    rows.append(("Training throughput, lensclf default (64x64)", f"{T['lensclf_images_per_s']:.1f} img/s",
                 "", ""))
    rows.append(("Training throughput, notebook (224x224, per-sample transforms)",
                 f"{T['notebook_images_per_s']:.1f} img/s", "", ""))
    rows.append(("Training throughput ratio lensclf / notebook", f"{T['ratio_lensclf_over_notebook']:.1f}x",
                 ">= 10x", verdict(T["ratio_lensclf_over_notebook"] >= 10)))
    rows.append((f"Training as fraction of matmul limit ({M['matmul_gflops']:.0f} GFLOP/s)",
                 f"{100 * train_frac:.0f}%", ">= 60%", verdict(train_frac >= 0.6)))
    if "lensclf_training_flops_64_executed" in M:
        executed = of_limit(T["lensclf_images_per_s"], M["lensclf_training_flops_64_executed"])
        r["ratios"]["training_executed_fraction_of_matmul"] = executed
        rows.append(("Training as fraction of matmul limit, counting only the multiply-adds executed "
                     "(tap-wise convolutions skip layer4's zero padding)", f"{100 * executed:.0f}%", "info", ""))
    rows.append(("Notebook training as fraction of matmul limit", f"{100 * nb_frac:.0f}%", "info", ""))
    rows.append(("Inference throughput, no TTA", f"{I['images_per_s']:.1f} img/s", ">= 300 img/s",
                 verdict(I["images_per_s"] >= 300)))
    rows.append(("Inference throughput, TTA (8 views)", f"{I['tta_images_per_s']:.1f} img/s", "info", ""))
    rows.append(("Inference as fraction of matmul limit", f"{100 * infer_frac:.0f}%", "info", ""))
    if "lensclf_forward_flops_64_executed" in M:
        executed = of_limit(I["images_per_s"], M["lensclf_forward_flops_64_executed"])
        r["ratios"]["inference_executed_fraction_of_matmul"] = executed
        rows.append(("Inference as fraction of matmul limit, counting only the multiply-adds executed",
                     f"{100 * executed:.0f}%", "info", ""))
    rows.append((f"`lensclf predict` peak RSS, {P['full']['n']:,} cutouts",
                 f"{P['full']['peak_rss_gib']:.2f} GiB", "< 1.5 GiB (200,000 cutouts)",
                 verdict(P["full"]["peak_rss_gib"] < 1.5)))
    rows.append((f"`lensclf predict` peak RSS growth, N={P['full']['n']:,} / N={P['tenth']['n']:,}",
                 f"{P['peak_growth_ratio']:.2f}x ({P['tenth']['peak_rss_gib']:.2f} GiB at N/10)",
                 "does not grow with N (~1x)", verdict(P["peak_growth_ratio"] < 1.2)))
    auc_l, auc_n = Q["lensclf_test_auc"], Q["notebook_test_auc"]
    rows.append((f"Test AUC after {Q['budget_s']} s budget, lensclf / notebook",
                 f"{auc_l if auc_l is None else round(auc_l, 3)} / {auc_n:.3f}", "lensclf >= notebook",
                 verdict(auc_l is not None and auc_l >= auc_n)))
    early = [c for c in Q["lensclf_checks"] if c["train_s"] <= 0.1 * Q["budget_s"]]
    rows.append(("Test AUC of lensclf's weights after 10% of the budget",
                 f"{early[-1]['test_auc']:.3f} (at {early[-1]['train_s']:.0f} s)" if early else "no check yet",
                 "info", ""))
    def seconds(t):
        return "not reached" if t is None else f"{t:.1f} s ({100 * t / Q['budget_s']:.0f}% of budget)"

    seeds = Q.get("seeds", [0])
    every = (f"{Q['fine_check_every_s']:g} s up to {Q['fine_checks_until_s']:g} s, then every {Q['check_every_s']:g} s"
             if "fine_check_every_s" in Q else f"{Q['check_every_s']:g} s")
    rows.append((f"Training seconds lensclf needs to reach the notebook's final AUC, seed {seeds[0]} (checked every "
                 f"{every})", seconds(Q["lensclf_s_to_notebook_auc"]), "info", ""))
    t = Q.get("lensclf_s_to_notebook_auc_median", Q["lensclf_s_to_notebook_auc"])
    per_seed = ", ".join(f"seed {k}: {'-' if v is None else f'{v:.0f} s'}"
                         for k, v in Q.get("lensclf_s_to_notebook_auc_by_seed", {}).items())
    rows.append((f"Training seconds lensclf needs to reach the notebook's final AUC, median of {len(seeds)} seeds",
                 seconds(t) + (f" ({per_seed})" if per_seed else ""),
                 "<= 10% of budget", verdict(t is not None and t <= 0.1 * Q["budget_s"])))
    m = r["machine"]
    lines = [f"# lensclf benchmarks (scale: {scale})", "",
             f"Machine: {m['platform']}, {m['cpu_count']} CPUs, torch {m['torch']}, {m['torch_threads']} threads, "
             f"{m['date_utc']}. Total run {r['total_s']:.0f} s.", ""]
    if scale != "full":
        lines += ["**Smoke run at reduced sizes: NOT a measurement of the issue's targets.**", ""]
    lines += ["| Measure | Result | Target | |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    executed_forward = M.get("lensclf_forward_flops_64_executed", float("nan")) / 1e9
    flops = (f"ResNet18 forward FLOPs (FlopCounterMode, 2 per multiply-add): lensclf 64x64 "
             f"{M['lensclf_forward_flops_64'] / 1e9:.3f} G (executes {executed_forward:.3f} G), torchvision 64x64 {M['resnet18_forward_flops_64'] / 1e9:.3f} G, "
             f"224x224 {M['resnet18_forward_flops_224'] / 1e9:.3f} G; one training image (forward + backward, "
             f"counted): lensclf 64x64 {M['lensclf_training_flops_64'] / 1e9:.3f} G (of which lensclf executes "
             f"{M.get('lensclf_training_flops_64_executed', float('nan')) / 1e9:.3f} G), notebook 224x224 "
             f"{M['resnet18_training_flops_224'] / 1e9:.3f} G.")
    return "\n".join(lines + ["", flops, ""])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--out", default=os.path.join(HERE, "results.json"))
    parser.add_argument("--budget-s", type=float, default=None, help="time-to-quality budget (default by scale)")
    parser.add_argument("--dir", default=None, help="parent of the temporary folder (default: system temp)")
    args = parser.parse_args(argv)
    size = dict(SCALES[args.scale])
    if args.budget_s is not None:
        size["budget_s"] = args.budget_s

    t_start = time.perf_counter()
    result = {"scale": args.scale, "sizes": size, "machine": {
        "platform": f"{platform.machine()} {platform.system()} {platform.release()}",
        "processor": platform.processor(), "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "loadavg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}}
    n_files = 2 * (size["train_per_class"] + size["test_per_class"])
    need = (n_files * 3 * 64 * 64 * 4 + 1.1 * size["stack_n"] * 3 * 64 * 64 * 4) * 1.2
    free = shutil.disk_usage(args.dir or tempfile.gettempdir()).free
    if free < need:
        parser.error(f"needs about {need / GIB:.1f} GiB free under {args.dir or tempfile.gettempdir()}, "
                     f"has {free / GIB:.1f} GiB; pass --dir on a larger disk")
    work = tempfile.mkdtemp(prefix="lensclf-run-all-", dir=args.dir)
    root = os.path.join(work, "data")
    try:
        n_tr, n_te = size["train_per_class"], size["test_per_class"]
        log(f"writing {2 * n_tr} train + {2 * n_te} test cutouts (medium) to {root}")
        result["write_s"], _ = timed(lambda: write_lens_dir(
            root, n_tr, n_tr, n_te, n_te, difficulty="medium", random_state=0, n_jobs=os.cpu_count()))
        X_test, y_test = load_lens_dir(root, split="test")
        X_test = np.ascontiguousarray(X_test, dtype=np.float32)

        log("1/5 loading")
        result["loading"], X, y = bench_loading_step(root)
        log("2/5 training throughput")
        result["training"], clf = bench_training(X, y, root, size["fit_n"], size["notebook_batches"],
                                                 size["matmul_n"])
        log("3/5 inference and predict memory")
        result["inference"] = bench_inference(clf, X, size["inference_n"])
        result["predict_memory"] = bench_predict_memory(clf, X[:1000], work, size["stack_n"])
        del X, y
        log("4/5 machine limit")
        result["limit"] = bench_limit(size["matmul_n"], result["training"]["matmul_gflops_before_after"])
        log("5/5 time to quality")
        result["quality"] = bench_time_to_quality(root, size["budget_s"], X_test, y_test)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["machine"]["loadavg_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    result["total_s"] = time.perf_counter() - t_start
    table = summarise(result, args.scale)
    print(table)
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    for path, text in ((out, json.dumps(result, indent=2, default=float) + "\n"),
                       (os.path.splitext(out)[0] + ".md", table)):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    log(f"wrote {out} and {os.path.splitext(out)[0]}.md")


if __name__ == "__main__":
    main()
