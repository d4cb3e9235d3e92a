"""The whole lens-finding workflow on a DeepLense "Test II" folder.

Usage::

    python examples/deeplense_test2.py [DATA_DIR] [--out OUT_DIR]

``DATA_DIR`` holds ``train_lenses/``, ``train_nonlenses/``, ``test_lenses/`` and
``test_nonlenses/`` with one ``.npy`` cutout (3, 64, 64) per object, like the
ML4SCI DeepLense lens-finding data set. Without it, a small simulated set in the
same layout is written to a temporary folder first. The steps are those of the
usual notebook: load, train, plot the training history, evaluate on the test
split (ROC, confusion matrix), save the model and write a report.

About five minutes on a laptop CPU with the simulated set (the full real set
takes much longer; use a GPU). ``LENSCLF_EXAMPLE_FAST=1`` trains for one epoch
on tiny data.
"""

import argparse
import os
import tempfile

import matplotlib

matplotlib.use("Agg")  # write figures to files; no window needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lensclf import (  # noqa: E402
    LensClassifier,
    format_summary,
    load_lens_dir,
    plot_confusion_matrix,
    plot_history,
    plot_roc,
    roc_auc_ci,
    write_lens_dir,
    write_report,
)

FAST = os.environ.get("LENSCLF_EXAMPLE_FAST") == "1"
EPOCHS = 1 if FAST else 3
# Sizes of the simulated stand-in (train lenses, train non-lenses, test lenses, test non-lenses).
SIMULATED_SIZES = (16, 32, 8, 16) if FAST else (400, 1200, 200, 600)


def run(data_dir, out_dir):
    os.makedirs(out_dir, exist_ok=True)

    # 1. Load both splits. Labels come from the folder names (1 = lens); the
    #    loader checks every file and names any bad one. return_paths gives the
    #    file of each row, used to name objects in the report.
    X_train, y_train = load_lens_dir(data_dir, "train")
    X_test, y_test, test_paths = load_lens_dir(data_dir, "test", return_paths=True)
    print(f"train: {np.sum(y_train == 1)} lenses, {np.sum(y_train == 0)} non-lenses; "
          f"test: {np.sum(y_test == 1)} lenses, {np.sum(y_test == 0)} non-lenses; "
          f"cutouts of shape {X_train.shape[1:]}")

    # 2. Train. The real set has about 17 non-lenses per lens: the default
    #    balanced sampler shows the network as many lenses as non-lenses, and the
    #    moving average of the weights after the last epoch is kept.
    clf = LensClassifier(max_epochs=EPOCHS, random_state=0)
    clf.fit(X_train, y_train)

    # 3. Training history: loss and AUC per epoch, train vs validation.
    fig = plot_history(clf.history_)
    fig.savefig(os.path.join(out_dir, "history.png"))
    plt.close(fig)

    # 4. Evaluate on the test split: ROC AUC with a bootstrap interval, the ROC
    #    curve and the confusion matrix at the default threshold of 0.5.
    scores = clf.predict_proba(X_test)[:, 1]
    auc, low, high = roc_auc_ci(y_test, scores)
    print(f"test ROC AUC: {auc:.3f} (95% CI {low:.3f} - {high:.3f})")

    fig, (ax_roc, ax_cm) = plt.subplots(1, 2, figsize=(10, 4.5), layout="constrained")
    plot_roc(y_test, scores, ax=ax_roc, auc_ci=(auc, low, high))
    plot_confusion_matrix(y_test, clf.predict(X_test), ax=ax_cm)
    fig.savefig(os.path.join(out_dir, "roc_confusion.png"))
    plt.close(fig)

    # 5. Save the model (weights plus settings in one safetensors file; loading
    #    it never runs code) and check that the loaded copy scores identically.
    model_path = os.path.join(out_dir, "model.safetensors")
    clf.save(model_path, overwrite=True)  # overwrite: rerunning the example replaces its own model
    reloaded = LensClassifier.load(model_path)
    assert np.allclose(reloaded.predict_proba(X_test[:8]), clf.predict_proba(X_test[:8]))
    print(f"model saved to {model_path}")

    # 6. A report folder: metrics.json, scores.csv and all the plots, with the
    #    most confident mistakes shown as colour images.
    names = [os.path.relpath(path, data_dir) for path in test_paths]
    metrics = write_report(os.path.join(out_dir, "report"), y_test, scores, X=X_test, names=names,
                           history=clf.history_, overwrite=True)
    print(format_summary(metrics))
    print(f"report written to {os.path.join(out_dir, 'report')}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", nargs="?", help="DeepLense-layout folder (default: simulate one)")
    parser.add_argument("--out", default="deeplense_test2_output", help="output folder (default: %(default)s)")
    args = parser.parse_args()
    if args.data_dir is not None:
        run(args.data_dir, args.out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = os.path.join(tmp, "deeplense_simulated")
        print(f"no DATA_DIR given: simulating {sum(SIMULATED_SIZES)} cutouts into {data_dir}")
        write_lens_dir(data_dir, *SIMULATED_SIZES, random_state=0)
        run(data_dir, args.out)


if __name__ == "__main__":
    main()
