"""One pass over the training images: every pixel checked, per-band statistics computed."""

import warnings

import numpy as np

__all__ = ["scan_images"]

# Rows processed at once.
_CHUNK = 2048


def scan_images(X, indices):
    """Check the images and return the per-channel mean and std over ``X[indices]``.

    For an in-memory or memory-mapped array this is one pass over all of ``X``,
    in chunks of rows: a :class:`ValueError` names the first images with NaN or
    infinite pixels, and per-row sums of the pixels and of their squares (shifted
    by a typical pixel value, so that large offsets cost no precision) give the
    statistics of the rows in ``indices``. Lazily read files are validated as they
    are read, and only the rows in ``indices`` are read here.

    Returns
    -------
    mean, std : float32 arrays of shape (n_channels,)
        A constant (or nearly constant) band gets std 1: it carries no information.
    """
    n_channels = X.shape[1]
    pixels = int(np.prod(X.shape[2:]))
    ordered = np.sort(np.asarray(indices))
    if isinstance(X, np.ndarray):  # every row, in slices
        blocks = ((np.arange(start, min(start + _CHUNK, len(X))), np.asarray(X[start:start + _CHUNK]))
                  for start in range(0, len(X), _CHUNK))
    else:  # only the selected rows
        blocks = ((rows, np.asarray(X[rows], dtype=np.float32))
                  for rows in (ordered[start:start + _CHUNK] for start in range(0, len(ordered), _CHUNK)))
    selected = np.zeros(len(X), dtype=bool)
    selected[ordered] = True
    # The shift: a typical value of each band, from the first few selected images.
    head = np.asarray(X[ordered[:16]], dtype=np.float32).reshape(-1, n_channels, pixels)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a band with no finite pixel
        shift = np.nanmedian(np.where(np.isfinite(head), head, np.nan), axis=(0, 2))
    shift = np.where(np.isfinite(shift), shift, 0.0).astype(np.float32)[:, None]
    row_sums, row_squares, bad = [], [], []
    for rows, block in blocks:
        block = block.reshape(len(block), n_channels, pixels)
        centred = block - shift
        sums = centred.sum(axis=2, dtype=np.float64)
        squares = np.einsum("ncp,ncp->nc", centred, centred).astype(np.float64)
        suspect = np.flatnonzero(~np.isfinite(squares).all(axis=1))
        for row in suspect:  # NaN or infinity, or a finite pixel too large to square in float32
            if not np.isfinite(block[row]).all():
                bad.append(int(rows[row]))
                continue
            wide = block[row].astype(np.float64) - shift
            sums[row], squares[row] = wide.sum(axis=1), np.square(wide).sum(axis=1)
        keep = selected[rows]
        row_sums.append(sums[keep])
        row_squares.append(squares[keep])
    if bad:
        raise ValueError(
            f"X contains NaN or infinite pixels in {len(bad)} image(s), e.g. at index {bad[:5]}. "
            "Remove or repair them (lensclf.load_lens_dir reports such files by name)."
        )
    # Summed in ascending row order, however the rows were read: the same statistics either way.
    count = len(ordered) * pixels
    centred_mean = np.concatenate(row_sums).sum(axis=0) / count
    var = np.maximum(np.concatenate(row_squares).sum(axis=0) / count - centred_mean**2, 0.0)
    mean = centred_mean + shift[:, 0]
    std = np.sqrt(var)
    scale = np.maximum(np.abs(mean), 1.0)
    std = np.where(std > 1e-6 * scale, std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)
