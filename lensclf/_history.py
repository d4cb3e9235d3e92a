"""A training history as plain per-epoch records (for JSON, CSV and model files)."""

import math
import numbers

import numpy as np

__all__ = ["history_records"]


def history_records(history):
    """One dict per epoch of a skorch :class:`~skorch.history.History`, JSON values only.

    The per-batch lists are dropped, numpy scalars become Python numbers, NaN
    and infinity become ``None``; values that are not numbers, strings,
    booleans or ``None`` are left out.
    """
    records = []
    for row in history:
        record = {}
        for key, value in dict(row).items():
            if key == "batches":
                continue
            if isinstance(value, np.generic):
                value = value.item()
            if isinstance(value, (bool, str)) or value is None:
                record[key] = value
            elif isinstance(value, numbers.Integral):
                record[key] = int(value)
            elif isinstance(value, numbers.Real):
                record[key] = float(value) if math.isfinite(value) else None
        records.append(record)
    return records
