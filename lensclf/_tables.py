"""Score tables: the rows ``lensclf predict`` writes, as CSV or (with pyarrow) Parquet, atomically.

:class:`ScoreTable` is a context manager: rows are written as they come (CSV)
or gathered and written at the end (Parquet); either way the file appears
complete or not at all (:func:`~lensclf._files.atomic_write`).
"""

import csv
import os

from ._files import atomic_write

__all__ = ["ScoreTable", "table_format"]


def table_format(path):
    """``"parquet"`` for a ``.parquet``/``.pq`` name, else ``"csv"``."""
    return "parquet" if os.fspath(path).lower().endswith((".parquet", ".pq")) else "csv"


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ImportError("writing Parquet needs pyarrow: pip install pyarrow (or give a .csv output)") from None
    return pyarrow


class ScoreTable:
    """Write rows of ``columns`` to ``path`` (CSV, or Parquet by its extension).

    Parameters
    ----------
    path : str or path-like
        Output file; ``.parquet``/``.pq`` for Parquet (needs pyarrow).
    columns : list of str
        Column names. ``"score"`` is stored as float64 and ``"index"`` as a
        nullable integer in Parquet; every other column as text.
    """

    def __init__(self, path, columns):
        self.path, self.columns = os.fspath(path), list(columns)
        self.format = table_format(path)
        if self.format == "parquet":
            _pyarrow()  # fail before any work is done
        self.n_rows = 0

    def __enter__(self):
        if self.format == "csv":
            self._context = atomic_write(self.path, "w", encoding="utf-8", newline="")
            self._writer = csv.writer(self._context.__enter__(), lineterminator="\n")
            self._writer.writerow(self.columns)
        else:
            self._context = atomic_write(self.path, "wb")
            self._handle = self._context.__enter__()
            self._data = {name: [] for name in self.columns}
        return self

    def write(self, rows):
        """Append rows (sequences in the order of ``columns``)."""
        if self.format == "csv":
            for row in rows:
                self._writer.writerow(["" if v is None else repr(v) if isinstance(v, float) else v for v in row])
                self.n_rows += 1
            return
        for row in rows:
            for name, value in zip(self.columns, row):
                self._data[name].append(value)
            self.n_rows += 1

    def __exit__(self, *exc_info):
        if self.format == "parquet" and exc_info[0] is None:
            pa = _pyarrow()
            arrays = {}
            for name, values in self._data.items():
                kind = pa.float64() if name == "score" else pa.int64() if name == "index" else pa.string()
                if kind == pa.string():
                    values = [None if v is None else str(v) for v in values]
                arrays[name] = pa.array(values, type=kind)
            pa.parquet.write_table(pa.table(arrays), self._handle)
        return self._context.__exit__(*exc_info)
