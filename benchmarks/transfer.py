"""Test AUC per family for candidate defaults: against training images seen and CPU seconds.

For each family of ``benchmarks/families.py`` and each configuration, ``fit`` on a
training set, and after every epoch score the family's test set with the current
weights (the time that takes is not counted): test ROC AUC, TPR at FPR 1e-3,
images seen, CPU seconds of training. One JSON line per (family, configuration)
goes to ``--out`` (appended; a rerun skips what is there). ``--summary`` prints
the table with the worst held-out family.

    python benchmarks/transfer.py --families all --configs scratch lens --n-train 2000 --out transfer.jsonl
    python benchmarks/transfer.py --summary transfer.jsonl

Configurations are named sets of ``LensClassifier`` parameters (``CONFIGS``), plus
``notebook64``: the notebook pipeline (``notebook_pipeline.py``) at 64 px.

``--tta-probe`` also scores the fitted model with test-time augmentation over
1, 2 (identity and the half turn), 4 (the quarter turns) and 8 (the dihedral
group) views, recorded as ``tta_auc`` (the default ``predict_proba`` is the 1-view
figure); its cost is predicting only, not counted in the CPU seconds of ``fit``.

``--ema-probe H`` also keeps an exponential moving average of the weights during
training (torch's ``AveragedModel``, parameters and batch-norm buffers, decay
``1 - 1 / (H x steps per epoch)``: a horizon of H epochs) and scores it on the test
set after every epoch beside the trained weights: a study of weight averaging that
costs no extra training. Its rows are named ``CONFIG+emaH`` and carry ``ema_curve``.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from skorch.callbacks import Callback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from families import DEVELOPMENT, DEVELOPMENT_EXTRA, DIAGNOSTIC, FAMILIES, HELD_OUT, make_family  # noqa: E402

from lensclf import LensClassifier, tpr_at_fpr  # noqa: E402
from lensclf._transforms import dihedral, dihedral_views  # noqa: E402

#: Candidate defaults (differences from LensClassifier's parameters at the time of the run).
CONFIGS = {
    "scratch": dict(weights=None, scaling="dataset", lr=1e-3),               # the defaults before issue 15
    "lens": dict(weights="lens", scaling="image", lr=1e-3),
    "lens_lr3e-4": dict(weights="lens", scaling="image", lr=3e-4),
    "lens_lr1e-4": dict(weights="lens", scaling="image", lr=1e-4),
    "scratch_image": dict(weights=None, scaling="image", lr=1e-3),
    "scratch_lr1e-4": dict(weights=None, scaling="dataset", lr=1e-4),
    "lens_cos3e-4": dict(weights="lens", scaling="image", lr=3e-4, lr_schedule="cosine"),
    "lens_cos1e-3": dict(weights="lens", scaling="image", lr=1e-3, lr_schedule="cosine"),
    "scratch_cos1e-3": dict(weights=None, scaling="dataset", lr=1e-3, lr_schedule="cosine"),
    "defaults": dict(),                                                    # LensClassifier() as it is now
    "plateau_auc": dict(lr_schedule="plateau_auc"),                        # the defaults, LR cut on valid AUC
    "cosine": dict(lr_schedule="cosine"),                                  # the defaults, one cosine decay
    "robust": dict(scaling="robust"),                                      # the defaults, sky-noise units + asinh
    "image": dict(scaling="image"),                  # the defaults until 2026-12-02 (rows then named "defaults")
    "image_plateau_auc": dict(scaling="image", lr_schedule="plateau_auc"),
    "lens_robust": dict(weights="lens", scaling="robust"),  # the defaults, spelt out so --weights-file applies
    "input64": dict(input_size=64),                          # the defaults, larger cutouts resized to 64 px
    "native": dict(input_size=None),                         # the defaults, cutouts at their own size
    # weight averaging, validated; "defaults" since 2026-12-02 afternoon (ema_epochs=1, keep="last")
    "ema0.5": dict(ema_epochs=0.5, keep="best"),             # averaging over ~half an epoch, best epoch kept
    "ema1": dict(ema_epochs=1, keep="best"),                 # ... over ~1 epoch
    "ema2": dict(ema_epochs=2, keep="best"),                 # ... over ~2 epochs
    "no_ema": dict(ema_epochs=None, keep="best"),            # the defaults before weight averaging
    "ema1_last": dict(ema_epochs=1, keep="last"),            # the defaults since then, spelt out
    # the class-imbalance correction (the defaults draw balanced batches: balance="sampler")
    "pos_weight": dict(balance="pos_weight"),                # every image once per epoch, lens loss weighted
    "no_balance": dict(balance=None),                        # every image once per epoch, no correction
    # learning rate and batch size again, with weight averaging (the defaults: lr=3e-4, batch_size=64)
    "lr1e-4": dict(lr=1e-4),
    "lr1.5e-4": dict(lr=1.5e-4),
    "lr6e-4": dict(lr=6e-4),
    "lr1e-3": dict(lr=1e-3),
    "bs32": dict(batch_size=32),
    "bs128_lr6e-4": dict(batch_size=128, lr=6e-4),
    "no_augment": dict(augment=False),                       # the defaults without the batch augmentation
}


class TestCurve(Callback):
    """After each epoch: test AUC of the network's weights, images seen, CPU seconds of training.

    The weights in the network at the end of an epoch: the trained ones, or with ``ema_epochs`` (the
    default since 2026-12-02) their validated moving average.

    With ``ema_decay``, also an exponential moving average of the weights (updated after every
    training step, not counted in the CPU seconds), scored into ``ema_records``.
    """

    def __init__(self, X_test, y_test, records, ema_decay=None, ema_records=None):
        self.X_test, self.y_test, self.records = X_test, y_test, records
        self.ema_decay, self.ema_records = ema_decay, ema_records

    def on_train_begin(self, net, **kwargs):
        self.cpu0, self.excluded, self.images = time.process_time(), 0.0, 0
        self.ema = None
        if self.ema_decay is not None:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(net.module_, multi_avg_fn=get_ema_multi_avg_fn(self.ema_decay), use_buffers=True)

    def on_batch_end(self, net, batch=None, training=None, **kwargs):
        if training:
            self.images += len(batch[0])
            if self.ema is not None:
                start = time.process_time()
                self.ema.update_parameters(net.module_)
                self.excluded += time.process_time() - start

    def _scores(self, module):
        was_training = module.training
        module.eval()
        with torch.inference_mode():
            scores = torch.cat([module(torch.from_numpy(self.X_test[i:i + 512]))
                                for i in range(0, len(self.X_test), 512)]).numpy()
        module.train(was_training)
        return scores

    def on_epoch_end(self, net, **kwargs):
        start = time.process_time()
        scores = self._scores(net.module_)
        if self.ema is not None:
            ema_scores = self._scores(self.ema.module)
            self.ema_records.append({"epoch": len(net.history), "images": self.images,
                                     "test_auc": round(float(roc_auc_score(self.y_test, ema_scores)), 4)})
        self.excluded += time.process_time() - start
        last = net.history[-1]
        self.records.append({"epoch": len(net.history), "images": self.images,
                             "cpu_s": round(time.process_time() - self.cpu0 - self.excluded, 1),
                             "test_auc": round(float(roc_auc_score(self.y_test, scores)), 4),
                             "valid_auc": round(float(last.get("valid_auc", float("nan"))), 4),
                             "lr": float(last.get("lr", float("nan")))})
        print(json.dumps({"epoch_record": self.records[-1]}), flush=True)  # progress of long runs


#: Subsets of the dihedral views scored by ``--tta-probe``: (quarter turns, mirror) pairs.
TTA_VIEWS = {1: [(0, False)], 2: [(0, False), (2, False)], 4: [(k, False) for k in range(4)], 8: dihedral_views()}


def tta_view_scores(clf, X, views, batch_size=512):
    """Logits of the fitted ``clf`` on ``X`` averaged over the given dihedral ``views``
    (``LensNet.forward`` with ``tta=True``, for any subset of its eight views)."""
    module = clf.net_.module_
    was_training = module.training
    module.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(X), batch_size):
            x = module.scale(torch.from_numpy(np.ascontiguousarray(X[i:i + batch_size])).float())
            out.append(sum(module.logits(dihedral(x, k, flip)) for k, flip in views) / len(views))
    module.train(was_training)
    return torch.cat(out).numpy()


def tta_probe(clf, X_test, y_test):
    """Test AUC (and TPR at FPR 1e-3) of the fitted model with 1, 2, 4 and 8 views."""
    result = {}
    for n, views in TTA_VIEWS.items():
        s = tta_view_scores(clf, X_test, views)
        result[str(n)] = {"test_auc": round(float(roc_auc_score(y_test, s)), 4),
                          "tpr_at_1e-3": round(float(tpr_at_fpr(y_test, s, 1e-3)), 4)}
    return result


def run_config(name, X, y, X_test, y_test, epochs, seed, weights_file=None, ema_horizon=None, tta=False):
    records, ema_records = [], []
    config = dict(CONFIGS[name])
    if weights_file and config.get("weights") == "lens":
        config["weights"] = weights_file  # a candidate backbone in place of the shipped one
    ema_decay = None
    if ema_horizon:
        settings = dict(LensClassifier().get_params(), **config)
        steps = max(1, int(len(y) * (1 - (settings["valid_size"] or 0.0))) // settings["batch_size"])
        ema_decay = 1.0 - 1.0 / (ema_horizon * steps)
    params = dict(config, max_epochs=epochs, random_state=seed, verbose=0,
                  callbacks=[("test_curve", TestCurve(X_test, y_test, records, ema_decay, ema_records))])
    cpu0 = time.process_time()
    clf = LensClassifier(**params).fit(X, y)
    fit_cpu = time.process_time() - cpu0
    p = clf.predict_proba(X_test)[:, 1]
    return {"test_auc": float(roc_auc_score(y_test, p)), "tpr_at_1e-3": float(tpr_at_fpr(y_test, p, 1e-3)),
            "fit_cpu_s": round(fit_cpu, 1), "best_epoch": clf.best_epoch_, "curve": records,
            **({"ema_decay": ema_decay, "ema_curve": ema_records} if ema_decay else {}),
            **({"tta_auc": tta_probe(clf, X_test, y_test)} if tta else {})}


def _write_layout(root, X, y, split):
    for label, folder in ((1, f"{split}_lenses"), (0, f"{split}_nonlenses")):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
        for index in np.flatnonzero(y == label):
            np.save(os.path.join(root, folder, f"{index}.npy"), X[index])


def run_notebook(X, y, X_test, y_test, epochs, seed, image_size=64):
    from notebook_pipeline import notebook_scores, train_notebook

    root = tempfile.mkdtemp(prefix="notebook-family-")
    try:
        _write_layout(root, X, y, "train")
        _write_layout(root, X_test, y_test, "test")
        records, bands = [], X.shape[1]

        def on_epoch_end(model, epoch, train_s):
            s, labels = notebook_scores(model, root, image_size=image_size, bands=bands)
            records.append({"epoch": epoch, "images": epoch * len(y), "wall_s": round(train_s, 1),
                            "test_auc": round(float(roc_auc_score(labels, s)), 4)})

        cpu0 = time.process_time()
        model, stats = train_notebook(root, max_epochs=epochs, seed=seed, image_size=image_size, bands=bands,
                                      on_epoch_end=on_epoch_end)
        fit_cpu = time.process_time() - cpu0
        s, labels = notebook_scores(model, root, image_size=image_size, bands=bands)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"test_auc": float(roc_auc_score(labels, s)), "tpr_at_1e-3": float(tpr_at_fpr(labels, s, 1e-3)),
            "fit_cpu_s": round(fit_cpu, 1), "curve": records}


def summary(path):
    rows = [json.loads(line) for line in open(path)]
    table = {}
    for row in rows:
        key = (row["config"], row["n_train"], row.get("n_train_lenses"), row["epochs"])
        table.setdefault(key, {})[row["family"]] = row
    families = [f for f in FAMILIES + DEVELOPMENT_EXTRA + DIAGNOSTIC if any(f in v for v in table.values())]
    print("| config | n_train | epochs | " + " | ".join(families) + " | worst held-out | CPU s (mean) |")
    print("|---" * (len(families) + 5) + "|")
    for (config, n_train, n_lenses, epochs), by_family in sorted(table.items()):
        held = [by_family[f]["test_auc"] for f in HELD_OUT if f in by_family]
        cells = [f"{by_family[f]['test_auc']:.3f}" if f in by_family else "" for f in families]
        worst = f"{min(held):.3f}" if held else ""
        cpu = np.mean([r["fit_cpu_s"] for r in by_family.values()])
        label = f"{n_train}" + (f" ({n_lenses} lenses)" if n_lenses else "")
        print(f"| {config} | {label} | {epochs} | " + " | ".join(cells) + f" | {worst} | {cpu:.0f} |")


def _positive(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of epochs, got {text!r}")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=["all"])
    parser.add_argument("--configs", nargs="+", default=["scratch", "defaults"])
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-train-lenses", type=int, default=None, help="e.g. 400 of 800: a balanced small set")
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="transfer.jsonl")
    parser.add_argument("--weights-file", default=None,
                        help="a candidate backbone (.safetensors) used in place of the shipped one by the 'lens' "
                             "configs; their rows are named CONFIG@FILE-NAME")
    parser.add_argument("--ema-probe", type=_positive, default=None, metavar="EPOCHS",
                        help="also score a moving average of the weights with this horizon (in epochs) each epoch")
    parser.add_argument("--tta-probe", action="store_true",
                        help="also score the fitted model with 1, 2, 4 and 8 test-time views (recorded as tta_auc)")
    parser.add_argument("--summary", default=None, metavar="JSONL")
    args = parser.parse_args(argv)
    if args.summary:
        summary(args.summary)
        return
    families = FAMILIES if args.families == ["all"] else (
        HELD_OUT if args.families == ["held_out"] else args.families)
    done = set()
    if os.path.exists(args.out):
        for line in open(args.out):
            row = json.loads(line)
            done.add((row["family"], row["config"], row["n_train"], row.get("n_train_lenses"), row["epochs"]))
    for family in families:
        n_test = args.n_test * 5 // 2 if family == "deep_5band_asinh" else args.n_test  # 1:100: enough lenses
        data = None
        for config_name in args.configs:
            config = config_name
            if args.weights_file and CONFIGS.get(config_name, {}).get("weights") == "lens":
                config = f"{config_name}@{os.path.basename(args.weights_file)}"
            if args.ema_probe and config_name != "notebook64":
                config = f"{config}+ema{args.ema_probe:g}"
            key = (family, config, args.n_train, args.n_train_lenses, args.epochs)
            if key in done:
                continue
            if data is None:
                data = make_family(family, args.n_train, n_test, seed=args.seed, n_train_lenses=args.n_train_lenses)
            X, y, X_test, y_test = data
            if config_name == "notebook64":
                result = run_notebook(X, y, X_test, y_test, args.epochs, args.seed)
            else:
                result = run_config(config_name, X, y, X_test, y_test, args.epochs, args.seed, args.weights_file,
                                    args.ema_probe, args.tta_probe)
            row = {"family": family, "config": config, "n_train": args.n_train, "n_train_lenses": args.n_train_lenses,
                   "epochs": args.epochs, "n_test": len(y_test), "test_lenses": int(y_test.sum()),
                   "development": family in (DEVELOPMENT,) + DEVELOPMENT_EXTRA, **result}
            print(json.dumps({k: v for k, v in row.items() if k not in ("curve", "ema_curve")}), flush=True)
            with open(args.out, "a") as handle:
                handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
