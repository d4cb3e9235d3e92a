"""The simulator's 'not trivial' bar, CNN side: LensClassifier defaults on 10,000 `medium` objects.

Compares with benchmarks/simulator_baseline.py (logistic regression on binned pixels).

    python benchmarks/simulator_cnn.py --out benchmarks/_work/simulator_cnn.json
"""

import argparse
import json
import time

from sklearn.metrics import roc_auc_score

from lensclf import LensClassifier, make_lenses, roc_auc_ci


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-train", type=int, default=10000, help="training objects (half lenses)")
    parser.add_argument("--n-test", type=int, default=4000, help="test objects (half lenses)")
    parser.add_argument("--difficulty", default="medium")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out")
    args = parser.parse_args()
    X, y = make_lenses(args.n_train // 2, args.n_train // 2, difficulty=args.difficulty, random_state=0, n_jobs=2)
    X_test, y_test = make_lenses(args.n_test // 2, args.n_test // 2, difficulty=args.difficulty,
                                 random_state=1, n_jobs=2)
    start = time.perf_counter()
    clf = LensClassifier(max_epochs=args.epochs, random_state=0, verbose=1).fit(X, y)
    fit_s = time.perf_counter() - start
    p = clf.predict_proba(X_test)[:, 1]
    ci = roc_auc_ci(y_test, p)
    result = dict(difficulty=args.difficulty, n_train=len(X), n_test=len(X_test), epochs=args.epochs,
                  fit_wall_s=round(fit_s, 1), best_epoch=clf.best_epoch_, test_auc=ci.auc,
                  test_auc_low=ci.low, test_auc_high=ci.high,
                  valid_auc=[round(v, 4) for v in clf.history_[:, "valid_auc"]])
    print(json.dumps(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
