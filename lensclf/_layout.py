"""The DeepLense folder layout: its class folders, their listing, the load cache, and :func:`load_lens_dir`.

A data set is a root folder holding ``train_lenses/``, ``train_nonlenses/``,
``test_lenses/`` and ``test_nonlenses/`` (:data:`CLASS_FOLDERS`, the one place
these names and their labels are written), each with one cutout file per object
in natural name order (:func:`natural_key`). :func:`load_lens_dir` lists a split,
explains a wrong root, reads the files with :func:`~lensclf._filearray.read_cutouts`
and can keep the result in a cache that any change to the files invalidates.
"""

import hashlib
import json
import os
import re
import warnings
from typing import NamedTuple

import numpy as np

from ._checks import problems_error, summarise
from ._cutout import CUTOUT_FORMATS, is_cutout_name
from ._errors import LensDataError, LensDataWarning
from ._filearray import read_cutouts
from ._files import atomic_write

__all__ = [
    "CLASS_FOLDERS",
    "SPLITS",
    "ClassFolder",
    "class_folders",
    "count_cutouts",
    "load_lens_dir",
    "natural_key",
]

#: The splits of the layout.
SPLITS = ("train", "test")


class ClassFolder(NamedTuple):
    """One class folder of the layout: its split, the label of its cutouts, its name."""

    split: str
    label: int
    name: str


#: The four class folders, lenses (label 1) before non-lenses (label 0) in each split.
CLASS_FOLDERS = tuple(
    ClassFolder(split, label, f"{split}_{kind}") for split in SPLITS for label, kind in ((1, "lenses"), (0, "nonlenses"))
)
_CLASS_FOLDER_NAMES = {folder.name for folder in CLASS_FOLDERS}

# Files that operating systems and tools drop into folders; ignored without a warning
# (they are still listed in the skipped report).
_SYSTEM_FILE_NAMES = {".ds_store", "thumbs.db", "desktop.ini", ".ipynb_checkpoints", "__macosx"}

_CACHE_FORMAT = 1
_NOT_FOUND_HINT_DEPTH = 2


def class_folders(split):
    """The two :class:`ClassFolder` of ``split``: lenses, then non-lenses."""
    return tuple(folder for folder in CLASS_FOLDERS if folder.split == split)


def natural_key(name):
    """Sort key putting ``2.npy`` before ``10.npy``; ties broken by the raw name."""
    parts = re.split(r"(\d+)", name)
    return [int(part) if i % 2 else part.casefold() for i, part in enumerate(parts)], name


def count_cutouts(folder):
    """Number of cutout files in ``folder`` (the rule of :func:`~lensclf._cutout.is_cutout_name`), or None if missing."""
    if not os.path.isdir(folder):
        return None
    with os.scandir(folder) as entries:
        return sum(1 for entry in entries if is_cutout_name(entry.name))


# --------------------------------------------------------------------------- listing and checks


def _is_system_file(name):
    return name.casefold() in _SYSTEM_FILE_NAMES or name.startswith("._")


def _list_class_folder(folder):
    """Return (npy_names, stray_names) of one class folder, each sorted naturally."""
    npy, stray = [], []
    with os.scandir(folder) as entries:
        for entry in entries:
            (npy if is_cutout_name(entry.name) else stray).append(entry.name)
    return sorted(npy, key=natural_key), sorted(stray, key=natural_key)


def _has_split_folders(folder, split):
    return all(os.path.isdir(os.path.join(folder, class_folder.name)) for class_folder in class_folders(split))


def _subfolders(folder, limit=200):
    try:
        with os.scandir(folder) as entries:
            names = sorted(
                entry.name for entry in entries if not entry.name.startswith(".") and entry.is_dir()
            )
    except OSError:
        return []
    return [os.path.join(folder, name) for name in names[:limit]]


def _where_are_the_folders(root, split):
    """Folders one or two levels below ``root`` that hold the class folders of ``split``."""
    found = []
    level = [root]
    for _ in range(_NOT_FOUND_HINT_DEPTH):
        level = [sub for folder in level for sub in _subfolders(folder)]
        found.extend(folder for folder in level if _has_split_folders(folder, split))
        if found:
            break
    return found


def _check_root(root, split):
    """Raise a helpful FileNotFoundError unless ``root`` holds the class folders of ``split``."""
    needed = [folder.name for folder in class_folders(split)]
    if not os.path.exists(root):
        message = f"data folder '{root}' does not exist"
        parent = os.path.dirname(os.path.abspath(root))
        if os.path.isdir(parent):
            siblings = [os.path.basename(p) for p in _subfolders(parent, limit=20)]
            if siblings:
                message += f" (its parent '{parent}' holds the folders: {', '.join(siblings)})"
        raise FileNotFoundError(message)
    if not os.path.isdir(root):
        raise NotADirectoryError(
            f"'{root}' is a file, not a folder; pass the folder that holds {needed[0]}/ and {needed[1]}/"
        )
    missing = [name for name in needed if not os.path.isdir(os.path.join(root, name))]
    if not missing:
        return
    message = (
        f"'{root}' does not hold the DeepLense folder layout for split='{split}': missing "
        f"{', '.join(name + '/' for name in missing)} (expected {needed[0]}/ with lenses and "
        f"{needed[1]}/ with non-lenses, one cutout file (.npy or FITS) per object)"
    )
    for name in missing:
        if os.path.exists(os.path.join(root, name)):
            message += f". '{os.path.join(root, name)}' exists but is not a folder"
    parent = os.path.dirname(os.path.abspath(root))
    found = _where_are_the_folders(root, split)
    if found:
        message += f". The folders are one level down: pass root='{found[0]}' instead"
        if len(found) > 1:
            message += f" (also found in: {', '.join(found[1:4])})"
    elif os.path.basename(os.path.normpath(root)) in _CLASS_FOLDER_NAMES and _has_split_folders(parent, split):
        message += f". '{root}' is itself a class folder: pass its parent root='{parent}' instead"
    else:
        other = [s for s in SPLITS if s != split and _has_split_folders(root, s)]
        if other:
            message += f". It does hold the folders for split='{other[0]}'"
    raise FileNotFoundError(message)


def _warn_stray(stray_paths, root, split):
    noted = [p for p in stray_paths if not _is_system_file(os.path.basename(p))]
    if noted:
        shown = ", ".join(noted[:5]) + (f", ... and {len(noted) - 5:,} more" if len(noted) > 5 else "")
        warnings.warn(
            LensDataWarning(
                f"ignored {len(noted):,} entr{'y' if len(noted) == 1 else 'ies'} that are not cutout files (.npy or FITS) "
                f"in the class folders of '{root}' (split='{split}'): {shown}"
            ),
            stacklevel=3,
        )


# --------------------------------------------------------------------------- cache


def _cache_folder(cache):
    if cache is None or cache is False:
        return None
    if cache is True:
        folder = os.environ.get("LENSCLF_CACHE_DIR")
        if not folder:
            base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
            folder = os.path.join(base, "lensclf")
        return folder
    if isinstance(cache, (str, os.PathLike)):
        return os.fspath(cache)
    raise TypeError(f"cache must be None, False, True or a folder path, got {cache!r}")


def _file_stamp(path):
    try:
        st = os.stat(path)
    except OSError:
        try:
            st = os.lstat(path)
        except OSError:
            return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _cache_key(root, split, listing):
    files = []
    for folder, names, stray in listing:
        for name in names + stray:
            files.append([folder + "/" + name, _file_stamp(os.path.join(root, folder, name))])
    return {"format": _CACHE_FORMAT, "root": os.path.abspath(root), "split": split, "files": files}


def _cache_stem(folder, key):
    tag = hashlib.sha256(f"{key['root']}\0{key['split']}".encode()).hexdigest()[:16]
    return os.path.join(folder, f"{key['split']}-{tag}")


def _read_cache(folder, key):
    """Return (X, record) from the cache when its key matches, else None."""
    stem = _cache_stem(folder, key)
    try:
        with open(stem + ".json", encoding="utf-8") as f:
            record = json.load(f)
        if record.get("key") != key:
            return None
        X = np.load(os.path.join(folder, record["data"]), mmap_mode="c", allow_pickle=False)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if X.dtype != np.float32 or X.ndim != 4 or X.shape[0] != len(record.get("kept", ())):
        return None
    return X, record


def _write_cache(folder, key, X, record):
    """Store ``X`` and ``record`` atomically; the JSON file, written last, commits it."""
    stem = _cache_stem(folder, key)
    try:
        os.makedirs(folder, exist_ok=True)
        try:
            with open(stem + ".json", encoding="utf-8") as f:
                old_data = json.load(f).get("data")
        except (OSError, ValueError, AttributeError):
            old_data = None
        data_name = f"{os.path.basename(stem)}-{os.urandom(6).hex()}.npy"
        with atomic_write(os.path.join(folder, data_name)) as f:
            np.save(f, X, allow_pickle=False)
        record = dict(record, key=key, data=data_name)
        payload = json.dumps(record).encode("utf-8")
        with atomic_write(stem + ".json") as f:
            f.write(payload)
        if old_data and old_data != data_name and "/" not in old_data and os.sep not in old_data:
            try:
                os.unlink(os.path.join(folder, old_data))
            except OSError:
                pass
    except OSError as exc:
        warnings.warn(f"could not write the lensclf data cache in '{folder}': {exc}", stacklevel=3)


# --------------------------------------------------------------------------- public


def load_lens_dir(
    root,
    split="train",
    *,
    errors="raise",
    return_paths=False,
    return_skipped=False,
    cache=None,
    n_threads=None,
):
    """Load one split of a DeepLense-layout folder of ``.npy`` cutouts.

    The layout is ``root/train_lenses/``, ``root/train_nonlenses/``,
    ``root/test_lenses/`` and ``root/test_nonlenses/``, each holding one ``.npy``
    file of shape (bands, height, width) per cutout. Lenses come first, then
    non-lenses; within a folder files are in natural name order (``2.npy`` before
    ``10.npy``). Any band count and size are accepted as long as all files agree; a
    file whose shape differs from the majority is a problem for that file.

    Entries of a class folder that do not end in ``.npy`` (``README``, ``.DS_Store``,
    sub-folders...) are ignored; they are listed in the skipped report, and all but
    known system files (``.DS_Store``, ``Thumbs.db``, ``desktop.ini``, ``._*``) are
    named in a :class:`~lensclf.LensDataWarning`.

    Parameters
    ----------
    root : str or path-like
        The folder holding the four class folders.
    split : {"train", "test"}, default="train"
        Which pair of class folders to read.
    errors : {"raise", "skip"}, default="raise"
        ``"raise"``: check every file, then raise one :class:`~lensclf.LensDataError`
        naming the first bad file and counting the others (all are in its
        ``problems``). ``"skip"``: leave bad files out with one
        :class:`~lensclf.LensDataWarning`; raise if no file is usable.
    return_paths : bool, default=False
        Also return the path (str) of each row of ``X``.
    return_skipped : bool, default=False
        Also return the ``(path, reason)`` list of every file left out.
    cache : None, bool or path-like, default=None
        ``None``/``False``: no cache. ``True``: cache in ``$LENSCLF_CACHE_DIR`` or
        ``~/.cache/lensclf``. A path: cache in that folder. The loaded split is kept
        as one ``.npy`` file with a JSON key (file names, sizes, modification
        times); a later call with unchanged files returns it as a copy-on-write
        memory map without reading the cutouts. Any change to the files invalidates
        it.
    n_threads : int, optional
        Threads reading files concurrently (helps cold disks); default
        ``min(8, cpu_count + 4)``.

    Returns
    -------
    X : ndarray of shape (n_cutouts, bands, height, width), float32, C order
        The cutouts (a copy-on-write ``numpy.memmap`` when read from the cache).
    y : ndarray of shape (n_cutouts,), int64
        1 for a lens, 0 for a non-lens.
    paths : list of str
        Only with ``return_paths=True``: the file of each row.
    skipped : list of (str, str)
        Only with ``return_skipped=True``: ``(path, reason)`` of every file or
        entry left out.

    Raises
    ------
    FileNotFoundError
        ``root`` or a class folder is missing; the message says where the folders
        are when they sit one or two levels below ``root``.
    LensDataError
        A class folder holds no ``.npy`` file, a file is unusable (with
        ``errors="raise"``), or no file is usable (with ``errors="skip"``).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
    root = os.fspath(root)
    _check_root(root, split)
    cache_folder = _cache_folder(cache)

    listing = []  # (folder name, npy names, stray names)
    for class_folder in class_folders(split):
        folder = os.path.join(root, class_folder.name)
        npy, stray = _list_class_folder(folder)
        if not npy:
            others = f" (it holds only: {', '.join(stray[:5])})" if stray else " (it is empty)"
            raise LensDataError(
                f"{folder}: class folder holds no cutout files ({CUTOUT_FORMATS}){others}",
                [(folder, "no cutout files")],
            )
        listing.append((class_folder.name, npy, stray))
    paths = [os.path.join(root, folder, name) for folder, names, _ in listing for name in names]
    labels = np.concatenate(
        [np.full(len(names), class_folder.label, dtype=np.int64)
         for (_, names, _), class_folder in zip(listing, class_folders(split))]
    )
    stray_paths = [os.path.join(root, folder, name) for folder, _, stray in listing for name in stray]
    stray_skipped = [
        (path, "folder, not a cutout file; ignored" if os.path.isdir(path) else "not a cutout file; ignored")
        for path in stray_paths
    ]
    _warn_stray(stray_paths, root, split)

    cached = None
    if cache_folder is not None:
        key = _cache_key(root, split, listing)
        cached = _read_cache(cache_folder, key)
    if cached is not None:
        X, record = cached
        kept = np.asarray(record["kept"], dtype=np.intp)
        problems = [(paths[i], reason) for i, reason in record["problems"]]
    else:
        X, problem_by_index = read_cutouts(paths, n_threads)
        problems = [(paths[i], problem_by_index[i]) for i in sorted(problem_by_index)]
        kept = np.array([i for i in range(len(paths)) if i not in problem_by_index], dtype=np.intp)

    if problems:
        if errors == "raise":
            raise problems_error(
                problems,
                "also have problems; all are listed in this error's .problems",
                hint=". Pass errors='skip' to leave bad files out",
            )
        if len(kept) == 0:
            raise LensDataError(
                f"no usable cutouts in '{root}' (split='{split}'): all {len(paths):,} files have problems: "
                + summarise(problems),
                problems,
            )
        warnings.warn(
            LensDataWarning(
                f"skipped {len(problems):,} of {len(paths):,} files in '{root}' (split='{split}'): "
                + summarise(problems)
                + " (pass return_skipped=True to get the full list)"
            ),
            stacklevel=2,
        )
        if cached is None:
            X = _keep_rows(X, kept)

    if cached is None and cache_folder is not None:
        record = {
            "kept": kept.tolist(),
            "problems": [[i, problem_by_index[i]] for i in sorted(problem_by_index)],
        }
        _write_cache(cache_folder, key, X, record)

    y = labels[kept]
    result = [X, y]
    if return_paths:
        result.append([paths[i] for i in kept])
    if return_skipped:
        result.append(sorted(problems + stray_skipped, key=lambda item: natural_key(item[0])))
    return tuple(result)


def _keep_rows(X, kept):
    """Move the kept rows to the front in place and shrink ``X`` (no second full copy)."""
    for j, i in enumerate(kept):
        if i != j:
            X[j] = X[i]
    try:
        X.resize((len(kept), *X.shape[1:]), refcheck=False)
        return X
    except (ValueError, SystemError):  # pragma: no cover - not resizable
        return X[: len(kept)].copy()
