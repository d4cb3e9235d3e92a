"""A torch dataset over one array of images that hands out whole batches.

The images stay in one array (in memory, a memory map, or a lazy
:class:`~lensclf.LensFileArray` over files): a batch is one fancy-indexing call,
never a Python loop over samples, and nothing is copied up front.
"""

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["LensDataset"]


class LensDataset(Dataset):
    """Batched access to ``X[indices]`` (and ``y[indices]``).

    Parameters
    ----------
    X : array-like of shape (N, C, H, W)
        Anything with ``len`` and numpy fancy indexing: ndarray, memmap or
        :class:`~lensclf.LensFileArray`.
    y : array-like of shape (N,) or None
        Labels; ``None`` for prediction.
    indices : array of int or None
        The subset of rows this dataset covers (no copy of X is made).
    check_finite : bool
        Refuse batches with NaN or infinite pixels, naming their rows (for
        prediction; ``fit`` checks every pixel once beforehand).
    """

    def __init__(self, X, y=None, indices=None, check_finite=False):
        self.X = X
        self.check_finite = check_finite
        self.y = None if y is None else np.asarray(y, dtype=np.float32)
        self.indices = np.arange(len(X)) if indices is None else np.asarray(indices)

    def __len__(self):
        return len(self.indices)

    def __getitems__(self, positions):
        rows = self.indices[np.asarray(positions, dtype=np.int64)]
        # Read in ascending order (friendly to memory maps and files), then restore the order asked for.
        order = np.argsort(rows, kind="stable")
        images = np.empty((len(rows),) + tuple(self.X.shape[1:]), dtype=np.float32)
        images[order] = self.X[rows[order]]
        if self.check_finite:
            finite = np.isfinite(images.reshape(len(rows), -1)).all(axis=1)
            if not finite.all():
                raise ValueError(f"X contains NaN or infinite pixels at index {rows[~finite][:5].tolist()}.")
        x = torch.from_numpy(images)
        if self.y is None:
            return x, None
        return x, torch.from_numpy(self.y[rows])

    def __getitem__(self, position):
        x, y = self.__getitems__([position])
        return x[0], (None if y is None else y[0])


def batch_as_is(batch):
    """Collate function for batches that :class:`LensDataset` already assembled."""
    return batch
