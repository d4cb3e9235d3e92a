"""A faithful re-creation of the DeepLense-style notebook pipeline, as the baseline for run_all.py.

What the notebook does, and this module does the same way:

- a torch ``Dataset`` that lists the class folders and ``np.load``s one file per
  ``__getitem__`` (every epoch, from disk);
- per-sample torchvision transforms in ``__getitem__``: ``torch.from_numpy``,
  ``Resize((224, 224))``, ``RandomHorizontalFlip``, ``RandomRotation(10)``,
  ``Normalize`` with the ImageNet mean/std (``ToPILImage`` does not accept
  3-band float arrays in [0, 1], so the tensor versions of the same transforms
  are used);
- ``DataLoader(batch_size=64, shuffle=True, num_workers=0)``;
- torchvision ``resnet18`` with a one-logit head, ``Adam(lr=1e-4)``,
  ``BCEWithLogitsLoss``, a plain training loop.

The notebook starts from ImageNet weights; this machine has no internet, so the
network starts from random weights (``weights=None``). That changes the AUC it
reaches, not its speed.
"""

import os
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import models, transforms

__all__ = ["NotebookLensDataset", "notebook_model", "train_notebook", "notebook_scores"]

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def _normalize(bands):
    """ImageNet's normalisation; for other band counts, its mean statistics repeated."""
    if bands == 3:
        return transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    return transforms.Normalize([float(np.mean(IMAGENET_MEAN))] * bands, [float(np.mean(IMAGENET_STD))] * bands)


def train_transform(image_size=224, bands=3):
    """The notebook's training transforms (per sample)."""
    return transforms.Compose([
        transforms.Resize((image_size, image_size), antialias=True),
        transforms.RandomHorizontalFlip(),
        transforms.RandomRotation(10),
        _normalize(bands),
    ])


def test_transform(image_size=224, bands=3):
    """The notebook's evaluation transforms (per sample, no augmentation)."""
    return transforms.Compose([
        transforms.Resize((image_size, image_size), antialias=True),
        _normalize(bands),
    ])


class NotebookLensDataset(Dataset):
    """One ``np.load`` per item from a DeepLense-layout folder, then per-sample transforms.

    Parameters
    ----------
    root : str
        Folder holding ``{split}_lenses/`` and ``{split}_nonlenses/``.
    split : {"train", "test"}
    transform : callable or None
    """

    def __init__(self, root, split="train", transform=None):
        self.transform = transform
        self.items = []
        for folder, label in ((f"{split}_lenses", 1), (f"{split}_nonlenses", 0)):
            path = os.path.join(root, folder)
            for name in sorted(os.listdir(path)):
                if name.endswith(".npy"):
                    self.items.append((os.path.join(path, name), label))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, label = self.items[i]
        image = torch.from_numpy(np.load(path).astype(np.float32))
        if self.transform is not None:
            image = self.transform(image)
        return image, torch.tensor(label, dtype=torch.float32)


def notebook_model(seed=0, bands=3):
    """torchvision ResNet18 (random weights) with a one-logit head (first convolution for ``bands``)."""
    torch.manual_seed(seed)
    model = models.resnet18(weights=None)
    if bands != 3:
        model.conv1 = torch.nn.Conv2d(bands, 64, kernel_size=7, stride=2, padding=3, bias=False)
    model.fc = torch.nn.Linear(model.fc.in_features, 1)
    return model


def notebook_scores(model, root, split="test", batch_size=64, image_size=224, bands=3):
    """Scores (sigmoid of the logit) and labels on a split, as the notebook evaluates."""
    loader = DataLoader(NotebookLensDataset(root, split, test_transform(image_size, bands)), batch_size=batch_size,
                        shuffle=False, num_workers=0)
    model.eval()
    scores, labels = [], []
    with torch.inference_mode():
        for images, y in loader:
            scores.append(torch.sigmoid(model(images).squeeze(1)).numpy())
            labels.append(y.numpy())
    model.train()
    return np.concatenate(scores), np.concatenate(labels)


def train_notebook(root, *, max_batches=None, budget_s=None, max_epochs=10**6, batch_size=64, lr=1e-4,
                   seed=0, on_epoch_end=None, check_every_s=None, on_check=None, image_size=224, bands=3):
    """Train the notebook pipeline on ``root``'s train split.

    Stops after ``max_batches`` batches or when ``budget_s`` wall-clock seconds of
    training have been spent (checked after every batch), whichever comes first.
    ``on_epoch_end(model, epoch, train_s)`` is called after each complete epoch, and
    ``image_size`` is the side the cutouts are resized to (the notebook's 224, or
    e.g. 64 for its 64-px variant); ``bands`` the band count of the cutouts.
    ``on_check(model, images, train_s)`` each time another ``check_every_s`` seconds
    of training have passed (after the batch that crosses the mark) and once at the
    end; the time they take is not counted as training time.

    Returns
    -------
    model : torch.nn.Module
    stats : dict
        ``images`` seen, ``batches``, ``epochs_completed``, ``train_s`` (training
        wall-clock seconds, excluding the callbacks).
    """
    torch.manual_seed(seed)
    model = notebook_model(seed, bands)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    loader = DataLoader(NotebookLensDataset(root, "train", train_transform(image_size, bands)), batch_size=batch_size,
                        shuffle=True, num_workers=0)
    model.train()
    images = batches = epochs = 0
    clock_start, excluded = time.perf_counter(), 0.0
    next_check = check_every_s

    def elapsed():
        return time.perf_counter() - clock_start - excluded

    def untimed(callback, *args):
        nonlocal excluded
        start = time.perf_counter()
        callback(*args)
        excluded += time.perf_counter() - start

    done = False
    for epoch in range(max_epochs):
        for x, y in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(x).squeeze(1), y)
            loss.backward()
            optimizer.step()
            images += len(x)
            batches += 1
            now = elapsed()
            if (max_batches is not None and batches >= max_batches) or (budget_s is not None and now >= budget_s):
                done = True
                break
            if on_check is not None and next_check is not None and now >= next_check:
                untimed(on_check, model, images, now)
                next_check += check_every_s
        if done:
            break
        epochs += 1
        if on_epoch_end is not None:
            untimed(on_epoch_end, model, epochs, elapsed())
    train_s = elapsed()
    if on_check is not None:
        untimed(on_check, model, images, train_s)
    return model, dict(images=images, batches=batches, epochs_completed=epochs, train_s=train_s)
