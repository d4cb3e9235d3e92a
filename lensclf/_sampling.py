"""Class balance: a sampler that draws lenses and non-lenses equally often."""

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler

__all__ = ["balanced_sampler", "positive_weight", "BALANCE_MODES"]

#: Accepted values of ``LensClassifier(balance=...)``.
BALANCE_MODES = ("sampler", "pos_weight", None)


def balanced_sampler(y, seed):
    """A :class:`~torch.utils.data.WeightedRandomSampler` giving ~50/50 batches.

    Built from the labels of the training part of one fit (after the
    validation split), so it is right inside cross-validation and grid search.
    Each epoch draws ``len(y)`` samples with replacement; each class carries
    half of the total weight.

    Parameters
    ----------
    y : array of {0, 1}
        Training labels.
    seed : int
        Seed of the sampler's own generator.
    """
    y = np.asarray(y).astype(int)
    counts = np.bincount(y, minlength=2)
    if np.any(counts == 0):
        raise ValueError(f"Cannot balance classes with counts {counts.tolist()}: both classes are needed.")
    weights = 0.5 / counts[y]
    generator = torch.Generator().manual_seed(int(seed))
    return WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), num_samples=len(y),
                                 replacement=True, generator=generator)


def positive_weight(y):
    """``n_negative / n_positive``: the ``pos_weight`` that balances the BCE loss."""
    y = np.asarray(y).astype(int)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        raise ValueError("Cannot weight classes: both classes are needed in the training data.")
    return (len(y) - n_pos) / n_pos
