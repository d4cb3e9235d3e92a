"""Where a model fails on a simulated family: test AUC by lens resolution, arc S/N, non-lens kind and crowding.

Trains one configuration of ``transfer.py`` on a family of ``families.py``, scores
the family's test set and splits the test AUC by the simulator's metadata:

- lenses by ``einstein_radius / seeing_i`` (how resolved the arcs are), by the
  arc's matched-filter S/N, by the source's distance from the lens axis in units
  of the Einstein radius (near 0: a ring or a full arc; near 1: one bright image,
  little stretched, and a faint counter-image in the lens light) and by the total
  magnification, each bin of lenses against all non-lenses;
- all lenses against each kind of non-lens (plain, companion, spiral, ring, merger);
- lenses and non-lenses with and without a bright neighbour, against each other.

A bin near 0.5 holds lenses this model cannot tell from non-lenses; if most of
a family's lenses sit in such bins, more epochs of the same recipe cannot lift
the family's AUC much.

    python benchmarks/difficulty.py --family crowded_hard --n-train 4000 --n-test 3000 --epochs 5 --out difficulty.json
"""

import argparse
import json
import os
import sys
import time

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from families import make_family  # noqa: E402
from transfer import CONFIGS  # noqa: E402

from lensclf import LensClassifier  # noqa: E402


def _auc(y, s):
    return round(float(roc_auc_score(y, s)), 4) if 0 < y.sum() < len(y) else None


def binned(scores, y, values, edges, name):
    """AUC of the lenses whose ``values`` fall in each bin against all non-lenses."""
    rows, lens = [], y == 1
    for lo, hi in zip(edges[:-1], edges[1:]):
        chosen = lens & (values >= lo) & (values <= hi)
        keep = chosen | ~lens
        rows.append({"by": name, "bin": f"{lo:.2f}-{hi:.2f}", "lenses": int(chosen.sum()),
                     "auc": _auc(y[keep], scores[keep])})
    return rows


def difficulty_table(scores, y, meta, n_bins=4):
    """Rows of the AUC split by resolution, S/N, non-lens kind and bright neighbour."""
    lens = y == 1
    rows = [{"by": "all", "bin": "", "lenses": int(lens.sum()), "auc": _auc(y, scores)}]
    resolution = meta["einstein_radius"] / meta["seeing_i"]
    offset = np.hypot(meta["source_x"], meta["source_y"]) / meta["einstein_radius"]
    for values, name in ((resolution, "einstein_radius/seeing_i"), (meta["feature_snr"], "arc S/N"),
                         (offset, "source offset/einstein_radius"), (meta["magnification"], "magnification")):
        edges = np.quantile(values[lens], np.linspace(0, 1, n_bins + 1))
        rows += binned(scores, y, values, edges, name)
    for kind in np.unique(meta["kind"][~lens]):
        keep = lens | (meta["kind"] == kind)
        rows.append({"by": "non-lens kind", "bin": str(kind), "lenses": int(lens.sum()),
                     "nonlenses": int((~lens & keep).sum()), "auc": _auc(y[keep], scores[keep])})
    for flag in (0, 1):
        keep = meta["bright_neighbour"] == flag
        rows.append({"by": "bright neighbour (both classes)", "bin": str(flag), "lenses": int((lens & keep).sum()),
                     "nonlenses": int((~lens & keep).sum()), "auc": _auc(y[keep], scores[keep])})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="crowded_hard")
    parser.add_argument("--config", default="defaults", choices=sorted(CONFIGS))
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--n-test", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tta", action="store_true",
                        help="also split the scores averaged over the 8 flips and rotations (column 'auc_tta')")
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    X, y, X_test, y_test, meta = make_family(args.family, args.n_train, args.n_test, seed=args.seed,
                                             test_metadata=True)
    cpu0 = time.process_time()
    clf = LensClassifier(**CONFIGS[args.config], max_epochs=args.epochs, random_state=args.seed, verbose=0).fit(X, y)
    fit_cpu = time.process_time() - cpu0
    scores = clf.predict_proba(X_test)[:, 1]
    rows = difficulty_table(scores, y_test, meta)
    if args.tta:
        clf.set_params(tta=True)
        for row, tta_row in zip(rows, difficulty_table(clf.predict_proba(X_test)[:, 1], y_test, meta)):
            row["auc_tta"] = tta_row["auc"]
    print(f"{args.family}, {args.config}, {args.n_train} training images, {args.epochs} epochs, "
          f"fit {fit_cpu:.0f} CPU s, best epoch {clf.best_epoch_}")
    print("| split by | bin | lenses | non-lenses | test AUC |" + (" with TTA |" if args.tta else "")
          + "\n|---|---|---|---|---|" + ("---|" if args.tta else ""))
    for row in rows:
        nonlenses = row.get("nonlenses", int((y_test == 0).sum()))
        print(f"| {row['by']} | {row['bin']} | {row['lenses']} | {nonlenses} | {row['auc']} |"
              + (f" {row['auc_tta']} |" if args.tta else ""))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"family": args.family, "config": args.config, "n_train": args.n_train,
                       "epochs": args.epochs, "fit_cpu_s": round(fit_cpu, 1), "best_epoch": clf.best_epoch_,
                       "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
