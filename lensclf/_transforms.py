"""Augmentations on batches of tensors, and the dihedral test-time augmentation.

A strong lens looks like a lens whatever way it is flipped or turned: the eight
flips and 90-degree rotations (the dihedral group D4) are exact symmetries of a
square cutout, applied without interpolation. Small extra rotations, shifts and
scalings are applied with bilinear resampling and reflection at the borders.
Everything works on whole batches; nothing here touches validation or test data
unless asked for (:func:`dihedral_views` for test-time augmentation).
"""

import math

import torch
from torch.nn import functional as F

__all__ = ["BatchAugmenter", "dihedral", "dihedral_views"]


def dihedral(x, k, flip):
    """Apply one of the eight symmetries of the square to a batch.

    Parameters
    ----------
    x : torch.Tensor
        Batch of shape (N, C, H, W).
    k : int
        Number of counter-clockwise quarter turns (0-3).
    flip : bool
        Whether to mirror (left-right) before turning.
    """
    if flip:
        x = torch.flip(x, dims=(-1,))
    if k % 4:
        x = torch.rot90(x, k % 4, dims=(-2, -1))
    return x


def dihedral_views():
    """The eight ``(k, flip)`` pairs of the dihedral group D4, identity first."""
    return [(k, flip) for flip in (False, True) for k in range(4)]


class BatchAugmenter:
    """Random symmetries and small affine jitter for a training batch.

    Used as the ``collate_fn`` of the training data loader, so it receives the
    batch made by :class:`~lensclf._dataset.LensDataset` and returns it
    augmented. Each image draws its own transformation: one of the eight
    dihedral symmetries (of the four that keep the shape, without quarter
    turns, for non-square images), then possibly the affine jitter.

    Parameters
    ----------
    max_rotation : float
        Largest extra rotation in degrees (uniform in +-max_rotation).
    max_shift : float
        Largest shift as a fraction of the image size.
    max_scale : float
        Largest relative change of scale (uniform in 1 +- max_scale).
    p_affine : float
        Probability that an image gets the affine jitter on top of its exact
        dihedral symmetry.
    seed : int
        Seed of the augmenter's own random generator (the global torch
        generator is never used, so results are reproducible).
    """

    def __init__(self, max_rotation=15.0, max_shift=0.05, max_scale=0.1, p_affine=0.5, seed=0):
        self.max_rotation = max_rotation
        self.max_shift = max_shift
        self.max_scale = max_scale
        self.p_affine = p_affine
        self.generator = torch.Generator().manual_seed(int(seed))

    def __getstate__(self):
        state = dict(self.__dict__)
        state["generator"] = self.generator.get_state()
        return state

    def __setstate__(self, state):
        generator_state = state.pop("generator")
        self.__dict__.update(state)
        self.generator = torch.Generator()
        self.generator.set_state(generator_state)

    def __call__(self, batch):
        x, y = batch
        return self.augment(x), y

    def _uniform(self, n, low, high):
        return low + (high - low) * torch.rand(n, generator=self.generator)

    def augment(self, x):
        """Return an augmented copy of the batch ``x`` (N, C, H, W)."""
        n = x.shape[0]
        x = x.clone()
        views = dihedral_views()
        if x.shape[-2] != x.shape[-1]:  # non-square: only the views that keep the shape (no quarter turns)
            views = [(k, flip) for k, flip in views if k % 2 == 0]
        group = torch.randint(0, len(views), (n,), generator=self.generator)
        for index, (k, flip) in enumerate(views):
            if index == 0:
                continue
            members = (group == index).nonzero(as_tuple=True)[0]
            if len(members):
                x[members] = dihedral(x[members], k, flip)
        if self.p_affine > 0 and (self.max_rotation or self.max_shift or self.max_scale):
            chosen = (torch.rand(n, generator=self.generator) < self.p_affine).nonzero(as_tuple=True)[0]
            if len(chosen):
                x[chosen] = self._affine(x[chosen])
        return x

    def _affine(self, x):
        n = x.shape[0]
        angle = self._uniform(n, -self.max_rotation, self.max_rotation) * (math.pi / 180)
        scale = self._uniform(n, 1 - self.max_scale, 1 + self.max_scale)
        shift = self._uniform(2 * n, -self.max_shift, self.max_shift).reshape(n, 2) * 2
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([
            torch.stack([cos, -sin, shift[:, 0]], dim=1),
            torch.stack([sin, cos, shift[:, 1]], dim=1),
        ], dim=1).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
