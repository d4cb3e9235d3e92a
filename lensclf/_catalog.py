"""A catalogue as input: a CSV file naming one cutout per object, with ID columns to copy to the output.

The CSV has a header. One column names the file (``path``, ``file``,
``filename`` or ``source``, in any case); relative paths are taken from the
catalogue's folder. An optional ``row`` (or ``index``) column picks a row of
a stacked ``.npy`` file or a zarr store; empty for single-cutout files. Every
other column is copied, unchanged, to the output rows of its object.
"""

import csv
import os

__all__ = ["PATH_COLUMNS", "ROW_COLUMNS", "read_catalog"]

#: Names of the column that holds the file (the first present wins, case-insensitive).
PATH_COLUMNS = ("path", "file", "filename", "source")
#: Names of the optional column that holds the row of a stack or store.
ROW_COLUMNS = ("row", "index")


def _find(header, names):
    lowered = {name.strip().lower(): name for name in header}
    return next((lowered[name] for name in names if name in lowered), None)


def read_catalog(path):
    """Read a catalogue: ``(entries, columns)``.

    ``entries`` lists ``(file, row, values)`` per object in catalogue order:
    the file's path, the row (int or None) and the values of the copied
    ``columns`` (the header's other columns, in order).

    Raises
    ------
    FileNotFoundError
        The catalogue does not exist.
    ValueError
        No file column, a row that is not a non-negative integer, or a line
        with another number of fields; the message names the line.
    """
    path = os.fspath(path)
    base = os.path.dirname(os.path.abspath(path))
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            raise ValueError(f"{path}: the catalogue is empty (expected a header line with a 'path' column)")
        path_column = _find(header, PATH_COLUMNS)
        if path_column is None:
            raise ValueError(f"{path}: the catalogue has no file column (one of {', '.join(PATH_COLUMNS)}); "
                             f"its columns are: {', '.join(header)}")
        row_column = _find(header, ROW_COLUMNS)
        file_at, row_at = header.index(path_column), header.index(row_column) if row_column else None
        copied = [i for i in range(len(header)) if i not in (file_at, row_at)]
        entries = []
        for fields in reader:
            if not fields:
                continue
            line = reader.line_num
            if len(fields) != len(header):
                raise ValueError(f"{path}, line {line}: {len(fields)} fields; the header has {len(header)}")
            name = fields[file_at].strip()
            if not name:
                raise ValueError(f"{path}, line {line}: the '{path_column}' column is empty")
            row = None
            if row_at is not None and fields[row_at].strip():
                text = fields[row_at].strip()
                if not text.isdigit():
                    raise ValueError(f"{path}, line {line}: row {text!r} is not a non-negative integer")
                row = int(text)
            entries.append((os.path.join(base, name), row, [fields[i] for i in copied]))
    if not entries:
        raise ValueError(f"{path}: the catalogue lists no objects")
    return entries, [header[i] for i in copied]
