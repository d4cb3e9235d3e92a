"""Tests for lensclf.plots and lensclf.report (Agg backend, no display)."""

import matplotlib

matplotlib.use("Agg")

import csv  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import warnings  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from skorch.history import History  # noqa: E402
from sklearn.metrics import confusion_matrix, precision_recall_curve, roc_curve  # noqa: E402

import lensclf  # noqa: E402
from lensclf.metrics import evaluate_scores  # noqa: E402
from lensclf.plots import (  # noqa: E402
    composite_rgb,
    plot_confusion_matrix,
    plot_error_gallery,
    plot_history,
    plot_precision_recall,
    plot_roc,
    plot_score_histogram,
)
from lensclf._files import atomic_write as _atomic_file  # noqa: E402
from lensclf.report import REPORT_FILES, format_summary, write_report  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def scored():
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.3).astype(int)
    s = 1.0 / (1.0 + np.exp(-(rng.normal(size=300) + 2.0 * y - 1.0)))
    return y, s


@pytest.fixture
def images(scored):
    rng = np.random.default_rng(1)
    return rng.normal(size=(len(scored[0]), 3, 16, 16)).astype(np.float32)


def _history(n_epochs=6, valid=True):
    rows = []
    for e in range(1, n_epochs + 1):
        row = {"epoch": e, "train_loss": 1.0 / e, "train_auc": 1 - 0.5 / e}
        if valid:
            row.update(valid_loss=1.0 / e + 0.05 * e, valid_auc=0.8 + 0.02 * e - 0.004 * e * e)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- history


def test_plot_history_two_panels_and_best_epoch():
    rows = _history()
    fig = plot_history(rows)
    assert isinstance(fig, Figure)
    ax_loss, ax_auc = fig.axes
    labels = {line.get_label(): line for line in ax_auc.get_lines()}
    np.testing.assert_allclose(labels["valid"].get_ydata(), [r["valid_auc"] for r in rows])
    np.testing.assert_allclose(labels["train"].get_ydata(), [r["train_auc"] for r in rows])
    best_epoch = int(np.argmax([r["valid_auc"] for r in rows])) + 1
    star = next(line for line in ax_auc.get_lines() if line.get_label().startswith("best valid AUC ="))
    assert list(star.get_xdata()) == [best_epoch]
    loss_labels = [line.get_label() for line in ax_loss.get_lines()]
    assert "train" in loss_labels and "valid" in loss_labels
    assert ax_loss.get_xlabel() == "epoch" and ax_auc.get_ylabel() == "ROC AUC"


def test_plot_history_without_validation_and_with_skorch_history():
    history = History()
    for row in _history(4, valid=False):
        history.new_epoch()
        for key, value in row.items():
            history.record(key, value)
    fig = plot_history(history)
    ax_loss, ax_auc = fig.axes
    assert [line.get_label() for line in ax_loss.get_lines()] == ["train"]
    np.testing.assert_allclose(ax_loss.get_lines()[0].get_ydata(), history[:, "train_loss"])


def test_plot_history_on_given_axes_and_bad_input():
    fig, axes = plt.subplots(1, 2)
    assert plot_history(_history(), ax=axes) is fig
    with pytest.raises(ValueError, match="empty"):
        plot_history([])
    with pytest.raises(TypeError):
        plot_history({"train_loss": [1, 2]})
    with pytest.raises(ValueError, match="two panels"):
        plot_history(_history(), ax=axes[0])


# --------------------------------------------------------------------------- ROC / PR / confusion / histogram


def test_plot_roc_line_is_sklearn_roc_curve(scored):
    y, s = scored
    ax = plot_roc(y, s, auc_ci=(0.8, 0.75, 0.85))
    assert isinstance(ax, Axes)
    fpr, tpr, _ = roc_curve(y, s)
    curve = ax.get_lines()[0]
    np.testing.assert_allclose(curve.get_xdata(), fpr)
    np.testing.assert_allclose(curve.get_ydata(), tpr)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("[0.750, 0.850]" in text for text in legend)
    assert ax.get_xscale() == "linear"


def test_plot_roc_log_fpr_on_given_axes(scored):
    y, s = scored
    _, ax = plt.subplots()
    assert plot_roc(y, s, ax=ax, log_fpr=True) is ax
    assert ax.get_xscale() == "log"
    assert ax.get_xlim()[0] == pytest.approx(0.5 / np.sum(y == 0))


def test_plot_precision_recall_line_is_sklearn_curve(scored):
    y, s = scored
    ax = plot_precision_recall(y, s)
    precision, recall, _ = precision_recall_curve(y, s)
    curve = ax.get_lines()[0]
    np.testing.assert_allclose(curve.get_xdata(), recall)
    np.testing.assert_allclose(curve.get_ydata(), precision)
    chance = ax.get_lines()[1]  # chance level = lens fraction
    np.testing.assert_allclose(chance.get_ydata(), y.mean())


@pytest.mark.parametrize("normalize", [None, "true"])
def test_plot_confusion_matrix_values_and_labels(scored, normalize):
    y, s = scored
    y_pred = (s >= 0.5).astype(int)
    ax = plot_confusion_matrix(y, y_pred, normalize=normalize)
    expected = confusion_matrix(y, y_pred, labels=[0, 1], normalize=normalize)
    image = ax.get_images()[0].get_array()
    np.testing.assert_allclose(image, expected)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["non-lens", "lens"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["non-lens", "lens"]


def test_plot_confusion_matrix_rejects_scores(scored):
    y, s = scored
    with pytest.raises(ValueError, match="threshold the scores"):
        plot_confusion_matrix(y, s)


def test_plot_score_histogram_counts_and_threshold(scored):
    y, s = scored
    ax = plot_score_histogram(y, s, threshold=0.3, log_y=True, bins=20)
    edges = np.linspace(0, 1, 21)
    assert len(ax.containers) == 2
    for label, container in zip((0, 1), ax.containers):
        heights = [patch.get_height() for patch in container]
        np.testing.assert_array_equal(heights, np.histogram(s[y == label], bins=edges)[0])
    threshold_line = ax.get_lines()[-1]
    assert list(threshold_line.get_xdata()) == [0.3, 0.3]
    assert ax.get_yscale() == "log"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"non-lens (n={np.sum(y == 0)})" in legend and f"lens (n={np.sum(y == 1)})" in legend


# --------------------------------------------------------------------------- composites and gallery


def test_composite_rgb_maps_g_r_i_to_blue_green_red():
    image = np.zeros((3, 8, 8))
    image[0, 4, 4] = 5.0  # g only -> blue
    image[2, 2, 2] = 5.0  # i only -> red
    rgb = composite_rgb(image)
    assert rgb.shape == (8, 8, 3)
    assert rgb[4, 4, 2] > 0 and rgb[4, 4, 0] == 0 and rgb[4, 4, 1] == 0
    assert rgb[2, 2, 0] > 0 and rgb[2, 2, 2] == 0
    assert rgb.min() >= 0 and rgb.max() <= 1


def test_composite_rgb_stretch_keeps_order_and_range():
    rng = np.random.default_rng(0)
    image = rng.gamma(1.0, size=(3, 32, 32)) * np.array([1.0, 2.0, 3.0])[:, None, None]
    copy = image.copy()
    for stretch in ("asinh", "linear"):
        rgb = composite_rgb(image, stretch=stretch)
        assert np.all(np.isfinite(rgb)) and rgb.min() >= 0 and rgb.max() <= 1
    np.testing.assert_array_equal(image, copy)  # input untouched
    # asinh lifts faint pixels relative to linear
    faint = image.mean(axis=0) < np.percentile(image.mean(axis=0), 50)
    assert composite_rgb(image)[faint].mean() > composite_rgb(image, stretch="linear")[faint].mean()


def test_composite_rgb_degenerate_images():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division-by-zero or NaN warnings
        np.testing.assert_array_equal(composite_rgb(np.full((3, 5, 5), 7.0)), np.zeros((5, 5, 3)))
        with_nan = np.random.default_rng(0).random((3, 6, 6))
        with_nan[1, 2, 3] = np.nan
        with_nan[0, 0, 0] = np.inf
        assert np.all(np.isfinite(composite_rgb(with_nan)))
        grey = composite_rgb(np.random.default_rng(1).random((1, 6, 6)))
        np.testing.assert_allclose(grey[..., 0], grey[..., 1])
        np.testing.assert_allclose(grey[..., 0], grey[..., 2])
        assert composite_rgb(np.random.default_rng(1).random((6, 6))).shape == (6, 6, 3)
    five = np.random.default_rng(2).random((5, 6, 6))
    np.testing.assert_array_equal(composite_rgb(five), composite_rgb(five[:3]))
    with pytest.raises(ValueError, match="stretch"):
        composite_rgb(five, stretch="log")
    with pytest.raises(ValueError, match="shape"):
        composite_rgb(np.zeros((2, 3, 4, 5)))


def _titles(ax_row):
    return [ax.get_title() for ax in ax_row if ax.get_images()]


def test_error_gallery_shows_most_confident_mistakes(scored, images):
    y, s = scored
    names = [f"/data/test_{'lenses' if t else 'nonlenses'}/{i}.npy" for i, t in enumerate(y)]
    fig = plot_error_gallery(images, y, s, names=names, n=4, threshold=0.5)
    assert isinstance(fig, Figure)
    axes = np.array(fig.axes).reshape(2, 4)
    fp = np.flatnonzero((y == 0) & (s >= 0.5))
    fp = fp[np.argsort(-s[fp])][:4]
    fn = np.flatnonzero((y == 1) & (s < 0.5))
    fn = fn[np.argsort(s[fn])][:4]
    assert _titles(axes[0]) == [f"test_nonlenses/{i}.npy\nscore {s[i]:.3f}" for i in fp]
    assert _titles(axes[1]) == [f"test_lenses/{i}.npy\nscore {s[i]:.3f}" for i in fn]
    np.testing.assert_allclose(axes[0, 0].get_images()[0].get_array(), composite_rgb(images[fp[0]]))


def test_error_gallery_with_few_or_no_mistakes(images):
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.7, 0.9, 0.8, 0.95])  # one false positive, no false negative
    fig = plot_error_gallery(images[:6], y, s, n=3)
    axes = np.array(fig.axes).reshape(2, 3)
    assert _titles(axes[0]) == ["#2\nscore 0.700"]
    assert _titles(axes[1]) == []
    texts = [t.get_text() for ax in axes[1] for t in ax.texts]
    assert any("no false negatives" in text for text in texts)
    with pytest.raises(ValueError, match="X must have shape"):
        plot_error_gallery(images[:5], y, s)
    with pytest.raises(ValueError, match="names"):
        plot_error_gallery(images[:6], y, s, names=["a"])


# --------------------------------------------------------------------------- report


def test_write_report_writes_every_file(tmp_path, scored, images):
    y, s = scored
    out = tmp_path / "report"
    names = [f"obj_{i}.npy" for i in range(len(y))]
    open_figures = plt.get_fignums()
    metrics = write_report(out, y, s, X=images, names=names, history=_history(), prior=0.001, n_bootstraps=100)
    assert plt.get_fignums() == open_figures  # every figure closed
    assert sorted(os.listdir(out)) == sorted(REPORT_FILES)  # and no temporary file left
    for name in REPORT_FILES:
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == PNG_MAGIC
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == metrics == evaluate_scores(y, s, prior=0.001, n_bootstraps=100)
    with open(out / "scores.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["name", "label", "score"]
    assert [r[0] for r in rows[1:]] == names
    np.testing.assert_array_equal([int(r[1]) for r in rows[1:]], y)
    np.testing.assert_array_equal([float(r[2]) for r in rows[1:]], s)  # exact round trip


def test_write_report_optional_files_and_overwrite(tmp_path, scored, images):
    y, s = scored
    out = tmp_path / "report"
    write_report(out, y, s, X=images, history=_history(), n_bootstraps=20)
    before = (out / "metrics.json").read_text()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_report(out, y, s, n_bootstraps=20)
    assert (out / "metrics.json").read_text() == before  # untouched after the refusal
    metrics = write_report(out, y, s, threshold=0.7, overwrite=True, n_bootstraps=20)
    files = set(os.listdir(out))
    assert "errors_gallery.png" not in files and "history.png" not in files  # no stale plots
    assert files == set(REPORT_FILES) - {"errors_gallery.png", "history.png"}
    assert json.loads((out / "metrics.json").read_text())["threshold"] == metrics["threshold"] == 0.7
    with open(out / "scores.csv", newline="") as handle:
        assert next(csv.reader(handle)) == ["index", "label", "score"]


def test_write_report_refuses_a_file_and_checks_inputs_first(tmp_path, scored):
    y, s = scored
    target = tmp_path / "a_file"
    target.write_text("x")
    with pytest.raises(FileExistsError):
        write_report(target, y, s, overwrite=True, n_bootstraps=20)
    out = tmp_path / "never_created"
    with pytest.raises(ValueError, match="names"):
        write_report(out, y, s, names=["a", "b"], n_bootstraps=20)
    with pytest.raises(ValueError, match="only non-lenses"):
        write_report(out, np.zeros_like(y), s, n_bootstraps=20)
    with pytest.raises(ValueError, match="empty"):
        write_report(out, y, s, history=[], n_bootstraps=20)
    assert not out.exists()
    write_report(tmp_path / "empty_ok", y, s, n_bootstraps=20)  # an empty folder is fine
    (tmp_path / "empty").mkdir()
    write_report(tmp_path / "empty", y, s, n_bootstraps=20)


def test_atomic_file_keeps_old_content_on_failure(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with _atomic_file(target, "w") as handle:
            handle.write("half-written")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["metrics.json"]
    with _atomic_file(target, "w") as handle:
        handle.write("new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["metrics.json"]


def test_format_summary(scored):
    y, s = scored
    metrics = evaluate_scores(y, s, n_bootstraps=50)
    text = format_summary(metrics)
    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    assert f"ROC AUC: {metrics['roc_auc']:.4f}" in text
    assert f"{metrics['roc_auc_ci']['low']:.4f} - {metrics['roc_auc_ci']['high']:.4f}" in text
    assert f"average precision: {metrics['average_precision']:.4f}" in text
    assert f"TPR at FPR 1e-2: {metrics['tpr_at_fpr']['1e-2']['tpr']:.4f}" in text
    assert "TPR at FPR 1e-3: n/a (only" in text  # ~210 non-lenses
    assert "balanced (0.5)" in text
    assert f"true lens      {fn:8d} {tp:6d}" in text
    with pytest.raises(ValueError, match="evaluate_scores"):
        format_summary({"roc_auc": 0.9})


def test_public_names_are_reexported():
    assert lensclf.write_report is write_report and lensclf.format_summary is format_summary
    assert lensclf.plot_roc is plot_roc and lensclf.plot_error_gallery is plot_error_gallery
    assert lensclf.composite_rgb is composite_rgb and lensclf.plot_history is plot_history
