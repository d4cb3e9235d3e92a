"""How hard is the simulated task for simple models? (The simulator must have no shortcut.)

For each difficulty preset, simulate a balanced train and test set (disjoint seeds) and
report test ROC AUCs of logistic regressions on

* ``binned_pixels``: the min-max scaled images binned to 3 x 16 x 16 (the "linear model on
  pixels" baseline; the issue asks for at most ~0.75 on 'medium');
* ``pixels``: all 3 x 64 x 64 min-max scaled pixels (``--full-pixels``; slower);
* ``flux_colour``: log total flux in g, r, i and the two total colours of the flux images
  (the brightness / colour shortcut check: should stay near 0.5-0.6);
* ``band_stats``: per-band mean, std and central-aperture mean of the min-max images.

Prints one JSON object per difficulty. Usage::

    python benchmarks/simulator_baseline.py [--n-train 4000] [--n-test 4000] [--difficulties easy medium hard]
"""

import argparse
import json
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lensclf import make_lenses


def simulate(n, difficulty, seed, n_jobs):
    """Balanced set: min-max images, flux images (same objects) and labels."""
    kwargs = dict(difficulty=difficulty, random_state=seed, n_jobs=n_jobs, return_components=True)
    X, y, comps = make_lenses(n // 2, n - n // 2, **kwargs)
    flux = comps["galaxy"] + comps["feature"] + comps["environment"] + comps["noise"]
    return X, flux, y


def features(X, flux):
    n = len(X)
    binned = X.reshape(n, 3, 16, 4, 16, 4).mean(axis=(3, 5)).reshape(n, -1)
    total = flux.sum(axis=(2, 3))
    logf = np.log10(np.clip(total, 1e-3, None))
    flux_colour = np.column_stack([logf, logf[:, 0] - logf[:, 1], logf[:, 1] - logf[:, 2]])
    centre = X[:, :, 24:40, 24:40]
    band_stats = np.column_stack([X.mean(axis=(2, 3)), X.std(axis=(2, 3)), centre.mean(axis=(2, 3))])
    return {"binned_pixels": binned, "pixels": X.reshape(n, -1), "flux_colour": flux_colour,
            "band_stats": band_stats}


def auc(train, y_train, test, y_test, C):
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
    model.fit(train, y_train)
    return float(roc_auc_score(y_test, model.predict_proba(test)[:, 1]))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--n-test", type=int, default=4000)
    parser.add_argument("--difficulties", nargs="+", default=["easy", "medium", "hard"])
    parser.add_argument("--full-pixels", action="store_true", help="also fit on all 12,288 pixels")
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--C", type=float, default=0.01, help="inverse L2 regularisation strength")
    args = parser.parse_args()
    for difficulty in args.difficulties:
        t0 = time.perf_counter()
        X_tr, f_tr, y_tr = simulate(args.n_train, difficulty, 1000, args.n_jobs)
        X_te, f_te, y_te = simulate(args.n_test, difficulty, 2000, args.n_jobs)
        feats_tr, feats_te = features(X_tr, f_tr), features(X_te, f_te)
        result = {"difficulty": difficulty, "n_train": len(y_tr), "n_test": len(y_te), "C": args.C}
        for name in ("binned_pixels", "pixels", "flux_colour", "band_stats"):
            if name == "pixels" and not args.full_pixels:
                continue
            result[f"auc_{name}"] = round(auc(feats_tr[name], y_tr, feats_te[name], y_te, args.C), 4)
        result["seconds"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
