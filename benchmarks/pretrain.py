"""Pretrain the shipped lens backbone on a stream of simulated cutouts (hours on a CPU, minutes on a GPU machine).

Every shard of 512 cutouts (256 lenses, 256 non-lenses) is simulated with its own
randomly drawn simulator settings (preset, pixel scale, seeing, PSF profile, noise,
source size, environment), pixel scaling (min-max per band, raw fluxes, arcsinh)
and band treatment (as simulated, reversed order, one grey band repeated), and is
seen once: no cutout is used twice. The settings stay inside the *pretraining
ranges* below, which exclude every held-out family of ``benchmarks/families.py``
in at least one axis, so that the transfer measured there is honest.

The network is the one :class:`lensclf.LensClassifier` builds with
``scaling="image"`` (each band of each cutout standardised on its own, so min-max
scaled and raw cutouts look alike), or with ``--scaling robust`` (sky-noise units,
arcsinh, standardised; the shipped backbone's third to sixth phases): a torchvision ResNet18
with the standard stem, 3 input bands and a one-logit head. AdamW, warm-up then cosine decay over the
planned steps, and an exponential moving average of the weights (and batch-norm
statistics), which is what gets saved.

Resumable: a checkpoint is written atomically every ``--checkpoint-every`` steps;
rerunning the same command continues from it (shards are a function of their
index, so the stream continues where it stopped).

    python benchmarks/pretrain.py --out pretrain-run --images 409600
    python benchmarks/pretrain.py --out pretrain-run --export lensclf/weights/resnet18_lens.safetensors

A finished run can be continued on further distinct shards with a warm restart of the schedule:

    python benchmarks/pretrain.py --out pretrain-run --images 409600 --restart 2000:1e-3

The shipped backbone's third phase, on robust-scaled input and busier fields (``--ranges wide``;
the check set is then drawn with those ranges, and the first record after the restart is the
earlier weights' baseline on it):

    python benchmarks/pretrain.py --out pretrain-run --images 563200 --restart 3200:1e-3 --scaling robust --ranges wide
    python benchmarks/pretrain.py --out pretrain-run --export resnet18_lens_p3.safetensors --export-weights ema

A further phase can start from an exported file (``--init``; the stream continues after the shards
it has seen). The shipped backbone's fourth to seventh phases, with the presets weighted towards
``hard`` (``--ranges wide_hard``), each from the file the phase before exported (the sixth twice as
long as the others):

    python benchmarks/pretrain.py --out pretrain-run4 --init resnet18_lens_p3.safetensors \
        --images 716800 --restart 4400:1e-3 --scaling robust --ranges wide_hard
    python benchmarks/pretrain.py --out pretrain-run4 --export resnet18_lens_p4.safetensors --export-weights ema
    python benchmarks/pretrain.py --out pretrain-run5 --init resnet18_lens_p4.safetensors \
        --images 870400 --restart 5600:1e-3 --scaling robust --ranges wide_hard
    python benchmarks/pretrain.py --out pretrain-run5 --export resnet18_lens_p5.safetensors --export-weights live
    python benchmarks/pretrain.py --out pretrain-run6 --init resnet18_lens_p5.safetensors \
        --images 1177600 --restart 6800:1e-3 --scaling robust --ranges wide_hard
    python benchmarks/pretrain.py --out pretrain-run6 --export resnet18_lens_p6.safetensors --export-weights ema
    python benchmarks/pretrain.py --out pretrain-run7 --init resnet18_lens_p6.safetensors \
        --images 1331200 --restart 9200:1e-3 --scaling robust --ranges wide_hard
    python benchmarks/pretrain.py --out pretrain-run7 --export resnet18_lens_p7.safetensors --export-weights live

The eighth phase (the shipped backbone) ran on a lent GPU machine: the network on the GPU, the stream simulated by
14 processes (``--producers``; the shards are still taken in index order), its length set from the simulator's
measured rate (``--probe-rate``) by ``benchmarks/pretrain_gpu.sh``:

    python benchmarks/pretrain.py --out pretrain-run8 --init resnet18_lens_p7.safetensors \
        --images 2443264 --restart 10400:1e-3 --scaling robust --ranges wide_hard --producers 14 --device cuda \
        --checkpoint-every 500
    python benchmarks/pretrain.py --out pretrain-run8 --export lensclf/weights/resnet18_lens.safetensors --export-weights ema
"""

import argparse
import json
import math
import multiprocessing as mp
import os
import sys
import time

import numpy as np

SHARD = 512
#: Pretraining ranges (see the module docstring); held-out families lie outside them.
RANGES = {
    "pixel_scale": (0.15, 0.22),
    "seeing_low": (0.4, 0.8),
    "seeing_span": (0.1, 0.35),
    "seeing_max": 1.05,
    "noise_scale": (0.5, 1.6),
    "field_density": (0.3, 2.5),
    "star_density": (0.0, 0.5),
    "bright_neighbour_probability": (0.0, 0.3),
    "source_radius_low": (0.05, 0.2),
    "source_radius_span": (0.1, 0.5),
}
#: ``--ranges wide`` (phase 3): busier environments (more field galaxies, stars and bright neighbours),
#: still short of the held-out ``crowded_hard`` (5 field galaxies, 2 stars, 60 % bright neighbours).
WIDE_RANGES = dict(RANGES, field_density=(0.3, 3.5), star_density=(0.0, 1.0),
                   bright_neighbour_probability=(0.0, 0.45))
#: ``--ranges wide_hard`` (phase 4): the wide ranges with the presets drawn 20 / 30 / 50 % easy / medium / hard
#: (uniform before), so that more shards hold faint arcs (S/N 20-100) and small Einstein radii.
WIDE_HARD_RANGES = dict(WIDE_RANGES, preset_p=(0.2, 0.3, 0.5))
RANGE_SETS = {"base": RANGES, "wide": WIDE_RANGES, "wide_hard": WIDE_HARD_RANGES}


def shard_settings(index, seed, ranges="base"):
    """The simulator call, pixel scaling and band treatment of shard ``index``."""
    rng = np.random.default_rng([seed, index])
    bounds = RANGE_SETS[ranges]
    lo = lambda key: rng.uniform(*bounds[key])  # noqa: E731
    seeing_low = lo("seeing_low")
    source_low = lo("source_radius_low")
    options = dict(
        # (p only where the range set gives one: the earlier phases' shards stay as they were drawn)
        difficulty=str(rng.choice(["easy", "medium", "hard"], **({"p": bounds["preset_p"]} if "preset_p" in bounds else {}))),
        pixel_scale=float(lo("pixel_scale")),
        seeing_range=(float(seeing_low), float(min(seeing_low + lo("seeing_span"), bounds["seeing_max"]))),
        psf_profile=str(rng.choice(["moffat", "gaussian"], p=[0.7, 0.3])),
        noise_scale=float(math.exp(rng.uniform(*np.log(bounds["noise_scale"])))),
        field_density=float(lo("field_density")),
        star_density=float(lo("star_density")),
        bright_neighbour_probability=float(lo("bright_neighbour_probability")),
        source_radius_range=(float(source_low), float(source_low + lo("source_radius_span"))),
    )
    scaling = str(rng.choice(["minmax", "none", "asinh"], p=[0.45, 0.3, 0.25]))
    bands = str(rng.choice(["as_is", "reversed", "grey"], p=[0.75, 0.1, 0.15]))
    asinh_soft = float(rng.uniform(1.0, 10.0))
    return options, scaling, bands, asinh_soft


def make_shard(index, seed, ranges="base"):
    """Simulate shard ``index``: (X float32 (512, 3, 64, 64), y int64)."""
    from lensclf import make_lenses
    from lensclf.simulate import SKY_SIGMA

    options, scaling, bands, soft = shard_settings(index, seed, ranges)
    difficulty = options.pop("difficulty")
    for attempt in range(5):  # a drawn pixel scale can be too small for the preset's largest arcs
        try:
            X, y = make_lenses(SHARD // 2, SHARD // 2, difficulty=difficulty, random_state=(seed * 1_000_003 + index * 11 + attempt) % 2**62,
                               normalize="minmax" if scaling == "minmax" else "none", **options)
            break
        except ValueError:
            options["pixel_scale"] = min(options["pixel_scale"] * 1.1, RANGE_SETS[ranges]["pixel_scale"][1])
    if scaling == "asinh":
        sigma = (SKY_SIGMA * options["noise_scale"]).astype(np.float32)[None, :, None, None]
        X = np.arcsinh(X / (soft * sigma)).astype(np.float32)
    if bands == "reversed":
        X = np.ascontiguousarray(X[:, ::-1])
    elif bands == "grey":
        X = np.repeat(X.mean(axis=1, keepdims=True), 3, axis=1)
    return X.astype(np.float32), y


def _producer(queue, start, stop, seed, ranges, step=1):
    os.environ["OMP_NUM_THREADS"] = "1"
    for index in range(start, stop, step):
        X, y = make_shard(index, seed, ranges)
        queue.put((index, X, y))
    queue.put(None)


def shard_stream(start, stop, seed, ranges, producers=1):
    """Yield ``(index, X, y)`` for shards ``start .. stop - 1`` in index order.

    ``producers`` simulator processes share the work: process ``k`` makes shards
    ``start + k``, ``start + k + producers``, ... into its own small queue, and the
    shards are taken from the queues in turn, so the order (and with it the
    training run and its resume point) does not depend on the number of processes.
    """
    context = mp.get_context("spawn")
    queues = [context.Queue(maxsize=3) for _ in range(producers)]
    processes = [context.Process(target=_producer, args=(queues[k], start + k, stop, seed, ranges, producers),
                                 daemon=True) for k in range(producers)]
    for process in processes:
        process.start()
    try:
        for index in range(start, stop):
            item = queues[(index - start) % producers].get()
            assert item is not None and item[0] == index, (index, item and item[0])
            yield item
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join()


def probe_rate(producers, seconds, seed, ranges):
    """Shards per second that ``producers`` simulator processes make (on shards outside the stream)."""
    start = 2 * 10**7
    t0, count = None, 0
    for _ in shard_stream(start, start + 10**6, seed, ranges, producers):
        if t0 is None:  # the first shard ends the start-up (process spawn, imports)
            t0 = time.time()
            continue
        count += 1
        if time.time() - t0 >= seconds:
            break
    return count / (time.time() - t0)


def _log_record(log, record):
    """Print a check-set record and append it to the run's log.jsonl."""
    print(json.dumps(record), flush=True)
    log.write(json.dumps(record) + "\n")
    log.flush()


def _atomic_save(obj, path):
    import torch

    tmp = f"{path}.tmp-{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def build(seed, scaling="image", init=None):
    import torch
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from lensclf._models import LensNet

    torch.manual_seed(seed)
    model = LensNet(arch="resnet18", weights=init, in_channels=3, stem="standard", scaling=scaling, fast_paths=True)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.998), use_buffers=True)
    return model, ema


def lr_at(step, total, peak, warmup, restart=None):
    """Warm-up then cosine decay to 2 % of ``peak``; ``restart=(step0, peak2)`` starts a second cosine
    (a warm restart with a 50-step warm-up) at ``step0`` that ends at ``total``."""
    if restart is not None and step >= restart[0]:
        return lr_at(step - restart[0], total - restart[0], restart[1], 50)
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def validation_set(seed, ranges="base"):
    """A fixed check set: two shards beyond the training stream (same ranges)."""
    parts = [make_shard(10**7 + k, seed, ranges) for k in range(2)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def evaluate(model, X, y):
    import torch
    from sklearn.metrics import roc_auc_score

    device = next(model.parameters()).device
    model.eval()
    with torch.inference_mode():
        logits = torch.cat([model(torch.from_numpy(X[i:i + 256]).to(device)).cpu() for i in range(0, len(X), 256)])
    model.train()
    return float(roc_auc_score(y, logits.numpy()))


def export(out, path, which="live"):
    """Write the backbone of the checkpoint (``which``: the trained weights, "live", or their average, "ema")."""
    import torch
    from safetensors.torch import save_file

    state = torch.load(os.path.join(out, "checkpoint.pt"), map_location="cpu", weights_only=False)
    prefix = "module.backbone." if which == "ema" else "backbone."
    weights = state["ema"] if which == "ema" else state["model"]
    backbone = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
    backbone = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in backbone.items()}
    meta = {"format": "lensclf-backbone", "weights": which, "arch": "resnet18", "stem": "standard", "in_channels": "3",
            "scaling": state["args"].get("scaling", "image"), "images_seen": str(state["step"] * state["args"]["batch_size"]),
            # the training run's arguments; which weights were exported is "weights" above, not the run's own
            # (unused) export options, which would read "live" for an ema export
            "args": json.dumps({k: v for k, v in state["args"].items() if k not in ("export", "export_weights")})}
    tmp = f"{path}.tmp-{os.getpid()}"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file(backbone, tmp, metadata=meta)
    os.replace(tmp, path)
    print(f"wrote {path} ({os.path.getsize(path) / 2**20:.1f} MiB) from step {state['step']}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--images", type=int, default=409_600, help="distinct training cutouts (each seen once)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--validate-every", type=int, default=200)
    parser.add_argument("--restart", default=None, metavar="STEP:LR",
                        help="continue a finished run with a warm restart: from STEP on, a new cosine from LR to the new total")
    parser.add_argument("--scaling", choices=["image", "robust"], default="image",
                        help="the network's input scaling (lensclf's scaling=...); phases 1-2 used image, phase 3 robust")
    parser.add_argument("--ranges", choices=sorted(RANGE_SETS), default="base",
                        help="simulator ranges of the shards (and of the check set): base, or wide (busier fields)")
    parser.add_argument("--init", default=None, metavar="FILE",
                        help="start a new run (no checkpoint in --out yet) from an exported backbone, e.g. the shipped "
                             "lensclf/weights/resnet18_lens.safetensors: the stream continues after the shards the file "
                             "has seen (its images_seen metadata), with a fresh optimizer; use with --restart")
    parser.add_argument("--export", default=None, help="write the backbone of the checkpoint to this file and stop")
    parser.add_argument("--export-weights", choices=["live", "ema"], default="live",
                        help="export the trained weights or their moving average (choose by the check set's AUC)")
    parser.add_argument("--device", default="cpu",
                        help="where the network trains (cpu, cuda); the simulation and augmentation stay on the CPU")
    parser.add_argument("--producers", type=int, default=1,
                        help="simulator processes (the stream is the same for any number)")
    parser.add_argument("--probe-rate", type=float, default=None, metavar="SECONDS",
                        help="only measure how many shards per second --producers processes simulate, print it, stop")
    args = parser.parse_args(argv)
    if args.probe_rate:
        rate = probe_rate(args.producers, args.probe_rate, args.seed, args.ranges)
        print(json.dumps({"producers": args.producers, "ranges": args.ranges, "shards_per_s": round(rate, 3),
                          "images_per_s": round(rate * SHARD, 1)}), flush=True)
        return
    if args.export:
        export(args.out, args.export, args.export_weights)
        return
    import signal

    import torch
    from lensclf._transforms import BatchAugmenter

    # a stop from outside (kill, timeout) ends the run like an interruption: the simulator processes are ended
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    ckpt_path = os.path.join(args.out, "checkpoint.pt")
    log = open(os.path.join(args.out, "log.jsonl"), "a")
    model, ema = build(args.seed, args.scaling, None if os.path.exists(ckpt_path) else args.init)
    device = torch.device(args.device)
    model.to(device)
    ema.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay, fused=True)
    augment = BatchAugmenter(seed=args.seed)
    step, shard_done, cpu0 = 0, 0, 0.0
    if os.path.exists(ckpt_path):
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        augment = state["augment"]
        step, shard_done, cpu0 = state["step"], state["shards"], state["cpu_s"]
        print(f"resumed at step {step}, shard {shard_done}", flush=True)
    elif args.init:
        from safetensors import safe_open

        with safe_open(args.init, "pt") as f:
            seen = int(f.metadata()["images_seen"])
        step, shard_done = seen // args.batch_size, seen // SHARD
        print(f"starting from {args.init} at step {step}, shard {shard_done} (fresh optimizer)", flush=True)
    restart = None
    if args.restart:
        at, lr2 = args.restart.split(":")
        restart = (int(at), float(lr2))
    steps_per_shard = SHARD // args.batch_size
    n_shards = args.images // SHARD
    total_steps = n_shards * steps_per_shard
    X_val, y_val = validation_set(args.seed, args.ranges)
    if restart is not None and step == restart[0]:  # the check set may differ from the earlier phases': a baseline
        record = {"step": step, "before_restart": True, "scaling": args.scaling, "ranges": args.ranges,
                  "val_auc_ema": evaluate(ema.module, X_val, y_val), "val_auc": evaluate(model, X_val, y_val)}
        _log_record(log, record)
    criterion = torch.nn.BCEWithLogitsLoss()
    t0, c0 = time.time(), time.process_time()
    model.train()
    for index, X, y in shard_stream(shard_done, n_shards, args.seed, args.ranges, args.producers):
        perm = np.random.default_rng([args.seed, index, 1]).permutation(len(y))
        X, y = torch.from_numpy(X[perm]), torch.from_numpy(y[perm]).float()
        for b in range(steps_per_shard):
            xb = augment.augment(X[b * args.batch_size:(b + 1) * args.batch_size]).to(device, non_blocking=True)
            yb = y[b * args.batch_size:(b + 1) * args.batch_size].to(device, non_blocking=True)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total_steps, args.lr, args.warmup, restart)
            loss = criterion(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            ema.update_parameters(model)
            step += 1
            if step % 20 == 0:
                print(json.dumps({"step": step, "loss": round(float(loss.detach()), 4),
                                  "lr": optimizer.param_groups[0]["lr"], "wall_s": round(time.time() - t0)}),
                      flush=True)
        shard_done = index + 1
        if step % args.validate_every < steps_per_shard:
            record = {"step": step, "images": step * args.batch_size, "shards": shard_done,
                      "val_auc_ema": evaluate(ema.module, X_val, y_val),
                      "val_auc": evaluate(model, X_val, y_val), "wall_s": round(time.time() - t0),
                      "cpu_s": round(cpu0 + time.process_time() - c0)}
            _log_record(log, record)
        if step % args.checkpoint_every < steps_per_shard or shard_done == n_shards:
            _atomic_save({"model": model.state_dict(), "ema": ema.state_dict(),
                          "optimizer": optimizer.state_dict(), "augment": augment, "step": step,
                          "shards": shard_done, "cpu_s": cpu0 + time.process_time() - c0,
                          "args": vars(args)}, ckpt_path)
    record = {"done": True, "step": step, "images": step * args.batch_size,
              "val_auc_ema": evaluate(ema.module, X_val, y_val), "val_auc": evaluate(model, X_val, y_val),
              "wall_s": round(time.time() - t0), "cpu_s": round(cpu0 + time.process_time() - c0)}
    _log_record(log, record)


if __name__ == "__main__":
    sys.exit(main())
