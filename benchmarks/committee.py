"""A committee of k LensClassifiers (scikit-learn's VotingClassifier, soft voting): k = 1, 3, 5.

HOLISMOKES XVI found that averaging networks raises the true-positive rate at
very low false-positive rates. Per family, one
``VotingClassifier([(f"net{i}", LensClassifier(random_state=i)) ...], voting="soft")``
with five members is fitted; the committees of k = 1 and 3 are its first k
members (soft voting with equal weights is the mean of the members'
probabilities, so that is exactly what a k-member VotingClassifier computes).
Cost is the members' own CPU seconds of training, summed over the k members.

    python benchmarks/committee.py --families dev_medium des_wide_psf --out benchmarks/results/committee.jsonl
"""

import argparse
import json
import os
import sys
import time

import numpy as np
from sklearn.ensemble import VotingClassifier
from sklearn.metrics import roc_auc_score
from skorch.callbacks import Callback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from families import make_family  # noqa: E402

from lensclf import LensClassifier, tpr_at_fpr, tpr_at_n_false_positives  # noqa: E402


class CpuClock(Callback):
    """Records the CPU seconds of the training it is attached to (``cpu_s``)."""

    def on_train_begin(self, net, **kwargs):
        self.start = time.process_time()

    def on_train_end(self, net, **kwargs):
        self.cpu_s = time.process_time() - self.start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=["dev_medium", "des_wide_psf"])
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="committee.jsonl")
    args = parser.parse_args(argv)
    for family in args.families:
        X, y, X_test, y_test = make_family(family, args.n_train, args.n_test, seed=args.seed)
        members = [(f"net{i}", LensClassifier(random_state=i, max_epochs=args.epochs, verbose=0,
                                              callbacks=[("cpu_clock", CpuClock())]))
                   for i in range(args.members)]
        committee = VotingClassifier(members, voting="soft").fit(X, y)
        # fit trains clones of the members: each clone's clock is in its own callbacks parameter
        clocks = [dict(m.callbacks)["cpu_clock"] for m in committee.estimators_]
        member_scores = [m.predict_proba(X_test)[:, 1] for m in committee.estimators_]
        assert np.allclose(np.mean(member_scores, axis=0), committee.predict_proba(X_test)[:, 1], atol=1e-6)
        for k in (1, 3, 5):
            if k > args.members:
                break
            s = np.mean(member_scores[:k], axis=0)
            row = {"family": family, "k": k, "n_train": args.n_train, "epochs": args.epochs,
                   "n_test": len(y_test), "test_lenses": int(y_test.sum()),
                   "test_auc": round(float(roc_auc_score(y_test, s)), 4),
                   "tpr_at_1e-3": round(float(tpr_at_fpr(y_test, s, 1e-3)), 4),
                   "tpr0": round(float(tpr_at_n_false_positives(y_test, s, 0)), 4),
                   "tpr10": round(float(tpr_at_n_false_positives(y_test, s, 10)), 4),
                   "train_cpu_s": round(sum(c.cpu_s for c in clocks[:k]), 1),
                   "member_aucs": [round(float(roc_auc_score(y_test, m)), 4) for m in member_scores[:k]]}
            print(json.dumps(row), flush=True)
            with open(args.out, "a") as handle:
                handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
