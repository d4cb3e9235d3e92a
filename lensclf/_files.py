"""Files that are never half-written.

:func:`atomic_write` and :func:`atomic_save_json` write to a temporary file in
the destination folder, flush it to disk, then move it onto the destination
with :func:`os.replace`: a reader sees the old file or the new one, never a
mix, and a crash or an exception leaves the old file intact and no temporary
file behind. :func:`save_figure` does the same for a matplotlib figure.

This module imports nothing from the rest of the package, so every other
module can use it.
"""

import json
import os
import secrets
from contextlib import contextmanager

import numpy as np

__all__ = ["atomic_save_json", "atomic_write", "check_output_folder", "json_default", "save_figure"]


def _fsync_directory(directory):
    """Make a rename inside ``directory`` durable (POSIX; a no-op elsewhere)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_write(path, mode="wb", **open_kwargs):
    """Open a temporary file next to ``path``; on success move it onto ``path``.

    The temporary file lives in the same folder (so the final
    :func:`os.replace` is atomic), is flushed and fsynced before the move, and
    is removed if the ``with`` block raises, in which case ``path`` is left as
    it was. An existing ``path`` is replaced: callers that must not overwrite
    check first.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file. Its folder must exist.
    mode : {"wb", "w"}, default="wb"
        Binary or text mode.
    **open_kwargs
        Passed to :func:`open` (e.g. ``encoding="utf-8"``, ``newline=""``).

    Yields
    ------
    file object
        The open temporary file.

    Examples
    --------
    >>> with atomic_write("scores.csv", "w", encoding="utf-8") as handle:  # doctest: +SKIP
    ...     handle.write("index,score\\n")
    """
    if "w" not in mode or any(c in mode for c in "ax+r"):
        raise ValueError(f"mode={mode!r}; atomic_write writes whole files: use 'w' or 'wb'.")
    directory, base = os.path.split(os.path.abspath(os.fspath(path)))
    # a fresh name opened with "x" (exclusive create): usual permissions, no clash
    tmp_path = os.path.join(directory, f".{base}.{secrets.token_hex(8)}.tmp")
    try:
        with open(tmp_path, mode.replace("w", "x"), **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        try:
            os.unlink(tmp_path)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(directory)


def check_output_folder(path, overwrite, what="Output folder", how_to_overwrite="pass overwrite=True"):
    """Refuse a file, or (unless ``overwrite``) a non-empty folder, where an output folder is to go.

    Parameters
    ----------
    path : str or os.PathLike
        The output folder; it may not exist yet.
    overwrite : bool
        Whether writing into a non-empty folder is allowed.
    what : str
        How the folder is called in the message (e.g. ``"Report folder"``).
    how_to_overwrite : str
        What the user does to allow it (``"pass --overwrite"`` on the command line).

    Returns
    -------
    str
        ``path`` as a string.
    """
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise FileExistsError(f"{what} {path!r} exists and is not a folder.")
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise FileExistsError(
            f"{what} {path!r} exists and is not empty; {how_to_overwrite} to write into it, "
            "or choose another folder."
        )
    return path


def json_default(value):
    """JSON form of numpy scalars and arrays and of paths (for ``json.dump``)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable: {value!r}")


def atomic_save_json(path, obj, *, overwrite=True):
    """Write ``obj`` as indented JSON (UTF-8) to ``path``, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file. Its folder must exist.
    obj : JSON-serialisable object
        Dicts, lists, strings, numbers, booleans and ``None``; numpy scalars and
        arrays and paths are converted. NaN and infinity are refused (they are
        not JSON): convert them to ``None`` first.
    overwrite : bool, default=True
        With ``False``, an existing ``path`` raises :class:`FileExistsError`.

    Raises
    ------
    TypeError, ValueError
        ``obj`` has no JSON form; nothing is written.
    """
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{os.fspath(path)} already exists; pass overwrite=True to replace it.")
    # Serialise first, so a bad object never even creates the temporary file.
    text = json.dumps(obj, indent=2, allow_nan=False, default=json_default) + "\n"
    with atomic_write(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def save_figure(fig, path, dpi=120):
    """Save a matplotlib figure as PNG to ``path`` atomically, then close it."""
    import matplotlib.pyplot as plt  # matplotlib is only needed by the callers that draw

    try:
        with atomic_write(path, "wb") as handle:
            fig.savefig(handle, format="png", dpi=dpi)
    finally:
        plt.close(fig)
