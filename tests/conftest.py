"""Shared fixtures: small synthetic image sets that a ResNet learns in seconds."""

import os

import matplotlib
import numpy as np
import pytest
import torch
from skorch.callbacks import Callback

matplotlib.use("Agg")
# Two cores: keep torch from oversubscribing when pytest or joblib run in parallel.
torch.set_num_threads(min(2, os.cpu_count() or 1))

HERE = os.path.dirname(__file__)
REAL_SAMPLE = os.path.join(HERE, "data", "deeplense_test2_sample")

# Scores of the same model computed in two ways (another process, other batch sizes) agree to
# float32 rounding on CPU; on a GPU, cuDNN picks algorithms per batch shape and convolutions may
# run in TF32, so they agree to about 1e-3 (relative) there.
SCORE_TOLERANCE = dict(rtol=1e-2, atol=1e-6) if torch.cuda.is_available() else dict(rtol=1e-5, atol=1e-9)


class InterruptInEpoch(Callback):
    """A Ctrl-C (KeyboardInterrupt) in the middle of the training pass of epoch ``epoch`` (1-based)."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_batch_end(self, net, training=False, **kwargs):
        if training and len(net.history) == self.epoch and len(net.history[-1]["batches"]) == 2:
            raise KeyboardInterrupt


def make_ring_images(n, size=32, lens_fraction=0.3, seed=0, channels=3):
    """Noise images; the 'lenses' carry a faint ring (an Einstein ring caricature)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < lens_fraction).astype(np.int64)
    y[:2] = [0, 1]  # both classes always present
    X = rng.normal(0.0, 1.0, size=(n, channels, size, size)).astype(np.float32)
    yy, xx = np.mgrid[:size, :size]
    radius = np.hypot(yy - size / 2 + 0.5, xx - size / 2 + 0.5)
    ring_radius = rng.uniform(size * 0.15, size * 0.3, size=n)
    rings = np.exp(-0.5 * ((radius[None] - ring_radius[:, None, None]) / 1.2) ** 2)
    X += (1.5 * y[:, None, None, None] * rings[:, None]).astype(np.float32)
    return X, y


@pytest.fixture(scope="session")
def ring_data():
    """(X_train, y_train, X_test, y_test) at 32x32 pixels."""
    X, y = make_ring_images(400, seed=0)
    X_test, y_test = make_ring_images(200, seed=1)
    return X, y, X_test, y_test


@pytest.fixture(scope="session")
def fitted_ring_model(ring_data):
    """A LensClassifier trained briefly on the ring set (shared by read-only tests)."""
    from lensclf import LensClassifier

    X, y, _, _ = ring_data
    # 4 epochs: the trained weights separate the rings from epoch 3 on; the moving average that fit returns
    # (ema_epochs=1) trails them by about an epoch
    return LensClassifier(max_epochs=4, batch_size=32, random_state=0, verbose=0).fit(X, y)
