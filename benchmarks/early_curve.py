"""Early learning curve of one LensClassifier configuration: test AUC every N training images.

Per image, not per second, so the curve does not depend on how busy the machine is
(training is bit-exact on CPU for a given ``--seed``). Used to compare changes to the
defaults for time to quality; the early curve varies a lot from seed to seed, so
compare several seeds.

    python benchmarks/early_curve.py --data /tmp/lensdata --seed 0 --out benchmarks/_work/early.jsonl
    python benchmarks/early_curve.py --data /tmp/lensdata --seed 0 --config lr=2e-3 --out ...
    python benchmarks/early_curve.py --data /tmp/lensdata --seed 0 --ema --out ...  # + averaged weights

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
from copy import deepcopy

import numpy as np
import torch
from skorch.callbacks import Callback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
from lensclf import LensClassifier, load_lens_dir, write_lens_dir  # noqa: E402
from _harness import add_callback, current_auc  # noqa: E402


class _WeightAverage:
    """An exponential moving average of a network's parameters and float buffers, updated
    after every training step with decay ``min(max_decay, (1 + t) / (10 + t))`` at step t
    (short memory early on, when the weights move fast)."""

    def __init__(self, module, max_decay=0.999):
        self.max_decay, self.steps = max_decay, 0
        self.averages = [t.detach().clone() for t in self._tensors(module)]

    @staticmethod
    def _tensors(module):
        return [p.detach() for p in module.parameters()] + [
            b for b in module.buffers() if b.dtype.is_floating_point]

    def update(self, module):
        self.steps += 1
        decay = min(self.max_decay, (1 + self.steps) / (10 + self.steps))
        torch._foreach_lerp_(self.averages, self._tensors(module), 1 - decay)

    def averaged_copy(self, module):
        copy = deepcopy(module)
        for target, average in zip(self._tensors(copy), self.averages):
            target.copy_(average)
        return copy


class _Probe(Callback):
    """Score the current weights every ``every`` training images; stop after ``limit`` images.

    With ``ema``, also score a moving average of the weights (:class:`_WeightAverage`)."""

    def __init__(self, X_test, y_test, every, limit, ema=False):
        self.X_test, self.y_test, self.every, self.limit = X_test, y_test, every, limit
        self.images, self.excluded, self.records, self.next = 0, 0.0, [], every
        self.ema, self.average = ema, None

    def on_train_begin(self, net, **kwargs):
        self.start = time.perf_counter()

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        if not training:
            return
        self.images += len(batch[0])
        t0 = time.perf_counter()
        if self.ema:  # off the clock: this measures learning per image, not the average's cost
            if self.average is None:
                self.average = _WeightAverage(net.module_)
            self.average.update(net.module_)
            self.excluded += time.perf_counter() - t0
        if self.images >= self.next:
            t0 = time.perf_counter()
            self.records.append({"images": self.images, "train_s": t0 - self.start - self.excluded,
                                 "test_auc": current_auc(net.module_, self.X_test, self.y_test)})
            if self.ema:
                self.records[-1]["test_auc_ema"] = current_auc(
                    self.average.averaged_copy(net.module_), self.X_test, self.y_test)
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
    parser.add_argument("--ema", action="store_true",
                        help="also score an exponential moving average of the weights at each check")
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
    probe = _Probe(X_test, y_test, args.every, args.images, ema=args.ema)
    add_callback(clf, "probe", probe)
    try:
        clf.fit(X, y)
    except KeyboardInterrupt:  # stopped before the first epoch ended
        pass
    record = {"config": args.config, "seed": args.seed, "ema": args.ema, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "curve": probe.records}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "a") as f:
        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
