"""Time reading a DeepLense-layout folder: lensclf.load_lens_dir vs the notebook approach.

Writes N random 3x64x64 float32 cutouts (10% lenses) into a temporary folder in the
DeepLense layout, evicts them from the page cache, and times:

- ``load_lens_dir`` cold (default threads and one thread) and warm;
- the notebook approach: a torch ``Dataset`` that ``np.load``s one file per
  ``__getitem__``, iterated for 5 epochs through a ``DataLoader`` (batch_size 64);
- the cached second load (``cache=``) and reading all of its data.

Prints one JSON object. The temporary folder is removed at the end.

Usage: ``python benchmarks/bench_loading.py [--n 20000] [--dir /tmp]``
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lensclf import load_lens_dir  # noqa: E402


def write_files(root, n, seed=0):
    rng = np.random.default_rng(seed)
    n_lenses = max(1, n // 10)
    for folder, count in (("train_lenses", n_lenses), ("train_nonlenses", n - n_lenses)):
        os.makedirs(os.path.join(root, folder))
        for k in range(1, count + 1):
            np.save(os.path.join(root, folder, f"{k}.npy"), rng.random((3, 64, 64), dtype=np.float32))


def all_files(root):
    return [os.path.join(dirpath, name) for dirpath, _, names in os.walk(root) for name in names]


def evict_page_cache(root):
    """Drop the files under ``root`` from the page cache; return how."""
    subprocess.run(["sync"], check=False)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return "drop_caches"
    except OSError as exc:
        drop_error = f"{type(exc).__name__}: {exc.strerror or exc}"
    # Fallback that needs no privilege: ask the kernel to forget each file's clean pages.
    for path in all_files(root):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return f"posix_fadvise(DONTNEED) per file (drop_caches failed: {drop_error})"


def notebook_epochs(root, epochs, batch_size):
    """The usual notebook code: np.load in Dataset.__getitem__, every epoch."""
    import torch
    from torch.utils.data import DataLoader, Dataset

    class LensDataset(Dataset):
        def __init__(self, root):
            self.items = []
            for folder, label in (("train_lenses", 1), ("train_nonlenses", 0)):
                for name in sorted(os.listdir(os.path.join(root, folder))):
                    self.items.append((os.path.join(root, folder, name), label))

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            path, label = self.items[i]
            return torch.from_numpy(np.load(path)), label

    loader = DataLoader(LensDataset(root), batch_size=batch_size, shuffle=True)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for images, labels in loader:
            pass
        times.append(time.perf_counter() - start)
    return times


def timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="number of files (default 20000)")
    parser.add_argument("--dir", default=None, help="where to create the temporary folder")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)

    work = tempfile.mkdtemp(prefix="lensclf-bench-", dir=args.dir)
    root, cache = os.path.join(work, "data"), os.path.join(work, "cache")
    result = {
        "n_files": args.n,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), python {platform.python_version()}",
    }
    try:
        result["write_s"], _ = timed(lambda: write_files(root, args.n))

        result["evict_method"] = evict_page_cache(root)
        result["load_lens_dir_cold_s"], (X, y) = timed(lambda: load_lens_dir(root))
        result["load_lens_dir_warm_s"], _ = timed(lambda: load_lens_dir(root))
        evict_page_cache(root)
        result["load_lens_dir_cold_1_thread_s"], (X1, _) = timed(lambda: load_lens_dir(root, n_threads=1))
        result["load_lens_dir_warm_1_thread_s"], _ = timed(lambda: load_lens_dir(root, n_threads=1))
        assert np.array_equal(X, X1)
        result["shape"] = list(X.shape)
        del X1

        evict_page_cache(root)
        epochs = notebook_epochs(root, args.epochs, args.batch_size)
        result["notebook_epoch_s"] = [round(t, 3) for t in epochs]
        result["notebook_total_s"] = sum(epochs)

        evict_page_cache(root)
        result["cache_first_load_s"], _ = timed(lambda: load_lens_dir(root, cache=cache))
        result["cache_second_load_s"], (Xc, _) = timed(lambda: load_lens_dir(root, cache=cache))
        result["cache_second_load_is_memmap"] = isinstance(Xc, np.memmap)
        result["cache_second_load_read_all_s"], _ = timed(lambda: float(np.asarray(Xc).sum(dtype=np.float64)))
        assert np.array_equal(Xc, X)
        del Xc
        result["speedup_vs_notebook_5_epochs"] = result["notebook_total_s"] / result["load_lens_dir_cold_s"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
