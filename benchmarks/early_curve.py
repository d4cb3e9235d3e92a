"""Early learning curve of one LensClassifier configuration: test AUC every N training images.

Per image, not per second, so the curve does not depend on how busy the machine is
(training is bit-exact on CPU for a given ``--seed``). Used to compare changes to the
defaults for time to quality; the early curve varies a lot from seed to seed, so
compare several seeds.

    python benchmarks/early_curve.py --data /tmp/lensdata --seed 0 --out benchmarks/_work/early.jsonl
    python benchmarks/early_curve.py --data /tmp/lensdata --seed 0 --config lr=2e-3 --out ...

``--data`` is a DeepLense-layout folder; if it does not exist it is written first with the
same simulated set as ``run_all.py --scale full`` (10,000 + 10,000 train, 2,000 + 2,000
test, ``medium``, seed 0). The AUC is taken on a fixed balanced subset of the test split
(``--n-test``) with the network's current weights, in evaluation mode.
"""

import argparse
import ast
import json
import os
import sys
import time

import numpy as np
import torch
from skorch.callbacks import Callback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
from lensclf import LensClassifier, load_lens_dir, write_lens_dir  # noqa: E402
from _harness import add_callback, current_auc  # noqa: E402


class _Probe(Callback):
    """Score the current weights every ``every`` training images; stop after ``limit`` images."""

    def __init__(self, X_test, y_test, every, limit):
        self.X_test, self.y_test, self.every, self.limit = X_test, y_test, every, limit
        self.images, self.excluded, self.records, self.next = 0, 0.0, [], every

    def on_train_begin(self, net, **kwargs):
        self.start = time.perf_counter()

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        if not training:
            return
        self.images += len(batch[0])
        if self.images >= self.next:
            t0 = time.perf_counter()
            self.records.append({"images": self.images, "train_s": t0 - self.start - self.excluded,
                                 "test_auc": current_auc(net.module_, self.X_test, self.y_test)})
            self.excluded += time.perf_counter() - t0
            self.next += self.every
            print(json.dumps(self.records[-1]), file=sys.stderr, flush=True)
            if self.images >= self.limit:
                raise KeyboardInterrupt  # skorch ends the fit


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--config", default="", help="LensClassifier parameters, e.g. 'lr=2e-3,batch_size=32'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=int, default=16_000, help="stop after this many training images")
    parser.add_argument("--every", type=int, default=1_600)
    parser.add_argument("--n-test", type=int, default=2_000)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    if not os.path.exists(args.data):
        write_lens_dir(args.data, 10_000, 10_000, 2_000, 2_000, difficulty="medium", random_state=0,
                       n_jobs=os.cpu_count())
    X, y = load_lens_dir(args.data)
    X_test, y_test = load_lens_dir(args.data, split="test")
    rng = np.random.default_rng(0)
    pick = np.concatenate([rng.choice(np.flatnonzero(y_test == c), args.n_test // 2, replace=False) for c in (0, 1)])
    X_test, y_test = np.ascontiguousarray(X_test[pick], dtype=np.float32), y_test[pick]

    params = dict(max_epochs=10_000, verbose=0, random_state=args.seed)
    for item in filter(None, args.config.split(",")):
        key, value = item.split("=", 1)
        params[key.strip()] = ast.literal_eval(value.strip())
    clf = LensClassifier(**params)
    probe = _Probe(X_test, y_test, args.every, args.images)
    add_callback(clf, "probe", probe)
    try:
        clf.fit(X, y)
    except KeyboardInterrupt:  # stopped before the first epoch ended
        pass
    record = {"config": args.config, "seed": args.seed, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "curve": probe.records}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "a") as f:
        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
