"""Which input size / stem / schedule gives the best test AUC per CPU-second?

Trains LensClassifier variants on one simulated set and records, per epoch, the
validation AUC and the process CPU time spent so far (CPU time, not wall time,
so the comparison holds on a busy machine). Writes JSON lines.

    python benchmarks/select_defaults.py --out benchmarks/_work/select.jsonl \
        --config 'input_size=None' --config 'input_size=96' --config 'input_size=128'
"""

import argparse
import ast
import json
import os
import sys
import time

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from skorch.callbacks import Callback

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import lensclf  # noqa: E402
from lensclf import LensClassifier, make_lenses  # noqa: E402
from _harness import add_callback  # noqa: E402


class _CpuClock(Callback):
    """Record cumulative process CPU seconds in the history each epoch."""

    def __init__(self, start):
        self.start = start

    def on_epoch_end(self, net, **kwargs):
        net.history.record("cpu_s", time.process_time() - self.start)


def parse_config(text):
    params = {}
    for item in filter(None, text.split(",")):
        key, value = item.split("=", 1)
        params[key.strip()] = ast.literal_eval(value.strip())
    return params


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", action="append", required=True)
    parser.add_argument("--n-lenses", type=int, default=1500)
    parser.add_argument("--n-nonlenses", type=int, default=4500)
    parser.add_argument("--n-test", type=int, default=3000, help="test images (balanced)")
    parser.add_argument("--difficulty", default="medium")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    X, y = make_lenses(args.n_lenses, args.n_nonlenses, difficulty=args.difficulty, random_state=args.seed)
    X_test, y_test = make_lenses(args.n_test // 2, args.n_test // 2, difficulty=args.difficulty,
                                 random_state=args.seed + 1000)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    for text in args.config:
        params = dict(max_epochs=args.epochs, random_state=args.seed, verbose=0)
        params.update(parse_config(text))
        clf = LensClassifier(**params)
        start = time.process_time()
        wall = time.perf_counter()
        # Measure the test AUC after every epoch through warm restarts would change the schedule;
        # instead use the validation AUC per epoch and the test AUC of the restored best model.
        add_callback(clf, "cpu_clock", _CpuClock(start))
        clf.fit(X, y)
        fit_cpu = time.process_time() - start
        fit_wall = time.perf_counter() - wall
        test_auc = roc_auc_score(y_test, clf.predict_proba(X_test)[:, 1])
        tta_auc = roc_auc_score(y_test, clf.set_params(tta=True).predict_proba(X_test)[:, 1])
        record = dict(config=text, params={k: repr(v) for k, v in params.items()},
                      n_train=len(X), difficulty=args.difficulty, fit_cpu_s=fit_cpu, fit_wall_s=fit_wall,
                      threads=torch.get_num_threads(), test_auc=test_auc, test_auc_tta=tta_auc,
                      best_epoch=clf.best_epoch_,
                      epochs=[{k: h.get(k) for k in ("epoch", "train_loss", "valid_loss", "train_auc",
                                                     "valid_auc", "cpu_s", "dur", "lr")}
                              for h in clf.history_])
        print(json.dumps({k: record[k] for k in ("config", "fit_cpu_s", "test_auc", "test_auc_tta")}), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
