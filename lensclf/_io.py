"""Files that are never half-written, and trained models that are safe to share.

Writing
    :func:`atomic_write` and :func:`atomic_save_json` write to a temporary file
    in the destination folder, flush it to disk, then move it onto the
    destination with :func:`os.replace`: a reader sees the old file or the new
    one, never a mix, and a crash or an exception leaves the old file intact and
    no temporary file behind.

Models
    :func:`save_model` writes a fitted :class:`~lensclf.LensClassifier` to ONE
    `safetensors <https://huggingface.co/docs/safetensors>`_ file (recommended
    name: ``model.safetensors``). Its tensors are the network's state dict
    (``channel_mean``, ``channel_std`` and ``backbone.*``); its header holds a
    JSON document with everything else needed to predict: the estimator's
    parameters, the class labels, the input shape, the training prior and
    history, and free-form metadata such as test metrics. :func:`load_model`
    reads it back without executing any code from the file (safetensors holds
    only numbers and text, unlike pickle), on any device; a model trained on a
    GPU loads on a CPU-only machine. :func:`read_model_metadata` reads the
    JSON document alone, without building the network.

    Because the file is a plain safetensors file, ``LensClassifier(weights=
    "model.safetensors")`` also accepts it as the initial weights of a new
    classifier (fine-tuning, warm starts).

    Pickle and joblib (``joblib.dump(clf, ...)``) keep working for
    scikit-learn workflows, but loading a pickle can run arbitrary code: use
    them only for files you made yourself or otherwise trust.

File format ``lensclf-model``, version 1
    safetensors metadata (string to string):

    - ``lensclf_format``: ``"lensclf-model"``
    - ``lensclf_format_version``: ``"1"``
    - ``lensclf_metadata``: a JSON object with the keys ``format``,
      ``format_version``, ``lensclf_version``, ``torch_version``, ``created``
      (UTC, ISO 8601), ``estimator``, ``params`` (``get_params()``; optimizer
      classes by name), ``params_not_saved`` (parameters that have no JSON
      form, by ``repr``; they take their default on loading), ``fitted``
      (``classes``, ``classes_dtype``, ``input_shape``, ``channel_mean``,
      ``channel_std``, ``train_prior``, ``best_epoch``, ``device``),
      ``network`` (``LensNet`` arguments: ``arch``, ``stem``, ``input_size``,
      ``in_channels``), ``history`` (one object per epoch, without the
      per-batch lists; non-finite numbers as ``null``), ``training_data``,
      ``extra`` and ``tensors_sha256`` (a checksum of the tensors, verified on
      loading).
"""

import datetime
import hashlib
import json
import math
import numbers
import os
import secrets
import warnings
from contextlib import contextmanager

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from skorch import NeuralNetBinaryClassifier
from skorch.history import History
from sklearn.utils.validation import check_is_fitted

from . import __version__
from ._classifier import LensClassifier
from ._dataset import batch_as_is
from ._models import LensNet

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "atomic_save_json",
    "atomic_write",
    "load_model",
    "read_model_metadata",
    "save_model",
]

#: Name of the model file format, stored in every model file.
FORMAT_NAME = "lensclf-model"
#: Newest version of the model file format this lensclf writes and reads.
FORMAT_VERSION = 1

# safetensors metadata keys (all values are strings)
_KEY_FORMAT = "lensclf_format"
_KEY_VERSION = "lensclf_format_version"
_KEY_DOCUMENT = "lensclf_metadata"


# ------------------------------------------------------------------ writing
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


def _json_default(value):
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
    text = json.dumps(obj, indent=2, allow_nan=False, default=_json_default) + "\n"
    with atomic_write(path, "w", encoding="utf-8") as handle:
        handle.write(text)


# ------------------------------------------------------------ JSON documents
_SIMPLE = (bool, int, float, str, type(None))


def _json_param(value):
    """``(json_value, ok)``: the JSON form of one estimator parameter."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value), True
    if isinstance(value, float) and not math.isfinite(value):
        return None, False
    if isinstance(value, _SIMPLE):
        return value, True
    if isinstance(value, type) and issubclass(value, torch.optim.Optimizer):
        if getattr(torch.optim, value.__name__, None) is value:
            return f"torch.optim.{value.__name__}", True
        return f"{value.__module__}.{value.__qualname__}", True
    return None, False


def _restore_param(name, value, path):
    """The estimator parameter for one saved JSON value (no imports, no code run)."""
    if name == "optimizer" and isinstance(value, str) and "." in value:
        module, _, class_name = value.rpartition(".")
        candidate = getattr(torch.optim, class_name, None)
        if module.startswith("torch.optim") and isinstance(candidate, type) and issubclass(
            candidate, torch.optim.Optimizer
        ):
            return candidate
        warnings.warn(
            f"{path}: the model was trained with the optimizer class {value}, which lensclf does not "
            "import from a file; optimizer is set to 'adam'. Before refitting, use "
            "set_params(optimizer=<that class>). Predictions are not affected.",
            UserWarning,
            stacklevel=4,
        )
        return "adam"
    return value


def _json_number(value):
    """A finite float, or ``None`` for NaN and infinity."""
    value = float(value)
    return value if math.isfinite(value) else None


def _json_history(history):
    """Per-epoch dicts with JSON values only (the per-batch lists are dropped)."""
    epochs = []
    for row in history:
        clean = {}
        for key, value in dict(row).items():
            if key == "batches":
                continue
            if isinstance(value, np.generic):
                value = value.item()
            if isinstance(value, (bool, str)) or value is None:
                clean[key] = value
            elif isinstance(value, numbers.Integral):
                clean[key] = int(value)
            elif isinstance(value, numbers.Real):
                clean[key] = _json_number(value)
            # anything else (lists, arrays, objects) is not part of the saved history
        epochs.append(clean)
    return epochs


def _json_labels(classes):
    labels = classes.tolist()
    for label in labels:
        if isinstance(label, float) and not math.isfinite(label):
            raise TypeError(f"Cannot save class label {label!r}: labels must be finite.")
        if not isinstance(label, (bool, int, float, str)):
            raise TypeError(
                f"Cannot save class label {label!r} of type {type(label).__name__}: "
                "save_model stores labels that are strings, integers, floats or booleans."
            )
    return labels


def _check_json_section(name, value):
    if value is None:
        return None
    try:
        return json.loads(json.dumps(value, allow_nan=False, default=_json_default))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be JSON-serialisable (dicts, lists, strings, finite numbers): {exc}") from exc


# -------------------------------------------------------------- the tensors
def _tensors_checksum(tensors):
    """SHA-256 over the tensors' names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


# ------------------------------------------------------------------- saving
def _network_arch(backbone, fallback):
    """The architecture name of a built ResNet (the ``arch`` parameter may have changed since fit)."""
    blocks = tuple(len(getattr(backbone, f"layer{i}", ())) for i in range(1, 5))
    kind = type(backbone.layer1[0]).__name__ if blocks[0] else None
    known = {
        ("BasicBlock", (2, 2, 2, 2)): "resnet18",
        ("BasicBlock", (3, 4, 6, 3)): "resnet34",
        ("Bottleneck", (3, 4, 6, 3)): "resnet50",
    }
    return known.get((kind, blocks), fallback)


def save_model(clf, path, *, overwrite=False, extra_metadata=None, training_data=None):
    """Save a fitted :class:`~lensclf.LensClassifier` to one safetensors file.

    The file holds the network weights as tensors and, in its header, a JSON
    document with the parameters, fitted state, training history and
    metadata (see the module documentation for the layout). It can be loaded
    with :func:`load_model` (or :meth:`LensClassifier.load`) on any machine,
    with or without a GPU, and loading it never runs code. Recommended name:
    ``model.safetensors`` (the ``.safetensors`` extension also lets
    ``LensClassifier(weights=path)`` use it as initial weights).

    Parameters
    ----------
    clf : LensClassifier
        A fitted classifier.
    path : str or os.PathLike
        Destination file. Missing parent folders are created.
    overwrite : bool, default=False
        Replace an existing file. Without it, an existing ``path`` raises
        :class:`FileExistsError`.
    extra_metadata : dict or None, default=None
        Anything JSON-serialisable to keep with the model, e.g. test metrics
        or the command line used; read back under ``"extra"``.
    training_data : dict or None, default=None
        A JSON-serialisable summary of the training data (folder, number of
        lenses and non-lenses, ...); read back under ``"training_data"``.

    Returns
    -------
    str
        The path written.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        ``clf`` is not fitted.
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    TypeError
        ``clf`` is not a LensClassifier, or the metadata is not JSON-serialisable.

    Notes
    -----
    The file is written atomically: a temporary file in the same folder is
    moved onto ``path`` only once it is complete, so an interrupted save never
    leaves a truncated model or destroys the previous one.
    """
    if not isinstance(clf, LensClassifier):
        raise TypeError(f"save_model saves a LensClassifier; got {type(clf).__name__}.")
    check_is_fitted(clf, "net_")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a folder; give the model a file name such as {os.path.join(path, 'model.safetensors')}.")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it.")
    extra_metadata = _check_json_section("extra_metadata", extra_metadata)
    training_data = _check_json_section("training_data", training_data)

    params, not_saved = {}, {}
    for name, value in clf.get_params(deep=False).items():
        json_value, ok = _json_param(value)
        if ok:
            params[name] = json_value
        else:
            not_saved[name] = repr(value)

    module = clf.net_.module_
    tensors = {name: tensor.detach().to("cpu").contiguous()
               for name, tensor in module.state_dict().items()}
    backbone = module.backbone
    stem = "small" if isinstance(backbone.maxpool, torch.nn.Identity) else "standard"
    document = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "lensclf_version": __version__,
        "torch_version": torch.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "estimator": type(clf).__name__,
        "params": params,
        "params_not_saved": not_saved,
        "fitted": {
            "classes": _json_labels(clf.classes_),
            "classes_dtype": clf.classes_.dtype.str,
            "input_shape": [int(s) for s in clf.input_shape_],
            "channel_mean": [float(v) for v in clf.channel_mean_],
            "channel_std": [float(v) for v in clf.channel_std_],
            "train_prior": float(clf.train_prior_),
            "best_epoch": int(clf.best_epoch_),
            "device": str(clf.device_),
        },
        "network": {
            "class": "LensNet",
            "arch": _network_arch(backbone, clf.arch),
            "stem": stem,
            "input_size": module.input_size,
            "in_channels": int(clf.input_shape_[0]),
        },
        "history": _json_history(clf.history_),
        "training_data": training_data,
        "extra": extra_metadata,
        "tensors_sha256": _tensors_checksum(tensors),
    }
    metadata = {
        _KEY_FORMAT: FORMAT_NAME,
        _KEY_VERSION: str(FORMAT_VERSION),
        _KEY_DOCUMENT: json.dumps(document, allow_nan=False, default=_json_default),
    }
    payload = safetensors_bytes(tensors, metadata=metadata)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with atomic_write(path, "wb") as handle:
        handle.write(payload)
    return path


# ------------------------------------------------------------------ reading
def _open_header(path):
    """The safetensors metadata of ``path`` (dict of str), with clear errors."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such model file.")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a folder, not a lensclf model file (e.g. model.safetensors).")
    try:
        with safe_open(path, framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
    except Exception as exc:  # SafetensorError for a bad header, short file or non-safetensors bytes
        raise ValueError(
            f"{path}: not a readable lensclf model file: the file is corrupt, truncated or not a "
            f"safetensors file ({exc}). lensclf model files are written by LensClassifier.save / "
            "lensclf.save_model; pickle files are read with joblib.load (trusted files only)."
        ) from exc
    return metadata


def _parse_document(path, metadata):
    path = os.fspath(path)
    name = metadata.get(_KEY_FORMAT)
    if name is None:
        raise ValueError(
            f"{path}: a safetensors file, but not a lensclf model (its metadata has no "
            f"{_KEY_FORMAT!r} entry). To start training from its weights, pass "
            "LensClassifier(weights=path) instead."
        )
    if name != FORMAT_NAME:
        raise ValueError(f"{path}: unknown model format {name!r}; lensclf reads {FORMAT_NAME!r} files.")
    try:
        version = int(metadata.get(_KEY_VERSION, ""))
    except ValueError:
        raise ValueError(
            f"{path}: corrupt lensclf model file: format version "
            f"{metadata.get(_KEY_VERSION)!r} is not an integer."
        ) from None
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path}: this model file has format version {version}, but lensclf {__version__} reads "
            f"{FORMAT_NAME} files up to version {FORMAT_VERSION}. Upgrade lensclf "
            "(pip install --upgrade lensclf) to load it."
        )
    if version < 1:
        raise ValueError(f"{path}: corrupt lensclf model file: format version {version} does not exist.")
    try:
        document = json.loads(metadata[_KEY_DOCUMENT])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            f"{path}: corrupt lensclf model file: its metadata document is missing or not valid JSON ({exc})."
        ) from exc
    if not isinstance(document, dict):
        raise ValueError(f"{path}: corrupt lensclf model file: its metadata document is not a JSON object.")
    return document


def read_model_metadata(path):
    """Read what a lensclf model file says about itself, without loading the network.

    Only the file's header is read: this is fast and needs no GPU.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`save_model` / :meth:`LensClassifier.save`.

    Returns
    -------
    dict
        The JSON document: ``format``, ``format_version``, ``lensclf_version``,
        ``created``, ``params``, ``fitted`` (classes, input shape, ...),
        ``network``, ``history``, ``training_data``, ``extra`` and more (see
        the module documentation).

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not a lensclf model file, corrupt, or written in a newer format
        version than this lensclf reads.
    """
    return _parse_document(path, _open_header(path))


def _field(document, path, *keys):
    value = document
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            raise ValueError(f"{path}: corrupt lensclf model file: metadata entry {'.'.join(keys)!r} is missing.")
        value = value[key]
    return value


def _resolve_load_device(device):
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={device!r} is not a torch device ('auto', 'cpu', 'cuda', 'cuda:1', ...).") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}, but CUDA is not available on this machine; use device='auto' or 'cpu'.")
    return str(device)


def _restore_labels(path, labels, dtype):
    if not isinstance(labels, list) or len(labels) != 2:
        raise ValueError(f"{path}: corrupt lensclf model file: 'fitted.classes' must list two labels.")
    try:
        dtype = np.dtype(dtype)
    except TypeError as exc:
        raise ValueError(f"{path}: corrupt lensclf model file: bad label dtype {dtype!r}.") from exc
    if dtype.kind not in "biufUO":
        raise ValueError(f"{path}: corrupt lensclf model file: unsupported label dtype {dtype!r}.")
    classes = np.empty(len(labels), dtype=dtype)
    classes[:] = labels
    return classes


def load_model(path, device="auto"):
    """Load a :class:`~lensclf.LensClassifier` saved by :func:`save_model`.

    The returned classifier is fitted and predicts exactly as the saved one
    did (same weights, classes, standardisation, prior and threshold). Only
    numbers and text are read from the file: no code is executed, so files
    from others are safe to load.

    Parameters
    ----------
    path : str or os.PathLike
        A lensclf model file (e.g. ``model.safetensors``).
    device : {"auto", "cpu", "cuda", "cuda:1", ...}, default="auto"
        Where the network goes. ``"auto"`` picks CUDA when available, else
        the CPU, so a model trained on a GPU loads on a CPU-only machine. It
        also becomes the classifier's ``device`` parameter (the device used by
        a later refit); all other parameters are those saved.

    Returns
    -------
    LensClassifier
        A fitted classifier with ``classes_``, ``net_``, ``history_``,
        ``channel_mean_``, ``channel_std_``, ``input_shape_``,
        ``train_prior_``, ``best_epoch_`` and ``device_``.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not a lensclf model file, corrupt or truncated, written in a newer
        format version than this lensclf reads, or ``device`` is unavailable.
    """
    path = os.fspath(path)
    document = _parse_document(path, _open_header(path))
    device_ = _resolve_load_device(device)

    # Parameters: defaults, overridden by the saved ones this version knows.
    clf = LensClassifier()
    known = clf.get_params(deep=False)
    saved = _field(document, path, "params")
    if not isinstance(saved, dict):
        raise ValueError(f"{path}: corrupt lensclf model file: 'params' is not a JSON object.")
    unknown = sorted(set(saved) - set(known))
    if unknown:
        warnings.warn(
            f"{path}: ignoring parameters this lensclf does not know: {unknown} "
            f"(the file was written by lensclf {document.get('lensclf_version')}).",
            UserWarning,
            stacklevel=2,
        )
    params = {name: _restore_param(name, value, path) for name, value in saved.items() if name in known}
    params["device"] = device
    clf.set_params(**params)
    try:
        clf._check_params()
    except ValueError as exc:
        raise ValueError(f"{path}: corrupt lensclf model file: invalid saved parameters ({exc}).") from exc

    # The network: built on the meta device (no memory, no random initialisation), then
    # given the file's tensors.
    network = _field(document, path, "network")
    fitted = _field(document, path, "fitted")
    try:
        with torch.device("meta"):
            module = LensNet(
                arch=_field(network, path, "arch"),
                weights=None,
                in_channels=int(_field(network, path, "in_channels")),
                stem=_field(network, path, "stem"),
                input_size=_field(network, path, "input_size"),
                channel_mean=_field(fitted, path, "channel_mean"),
                channel_std=_field(fitted, path, "channel_std"),
            )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: corrupt lensclf model file: bad network description ({exc}).") from exc
    try:
        state = load_file(path, device="cpu")
    except Exception as exc:
        raise ValueError(f"{path}: corrupt or truncated lensclf model file ({exc}).") from exc
    expected = document.get("tensors_sha256")
    if expected is not None and _tensors_checksum(state) != expected:
        raise ValueError(
            f"{path}: corrupt lensclf model file: the weights do not match the checksum recorded "
            "when the file was saved (the file was damaged after saving)."
        )
    try:
        wrong_dtype = [k for k, v in module.state_dict().items() if k in state and state[k].dtype != v.dtype]
        if wrong_dtype:
            raise RuntimeError(f"unexpected dtypes for {wrong_dtype[:5]}")
        module.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise ValueError(
            f"{path}: corrupt lensclf model file: the weights do not fit the described network ({exc})."
        ) from exc
    if any(t.is_meta for t in module.state_dict().values()):  # pragma: no cover - strict=True prevents it
        raise ValueError(f"{path}: corrupt lensclf model file: some network tensors are missing.")
    module.eval()

    # Fitted state.
    clf.classes_ = _restore_labels(path, _field(fitted, path, "classes"), _field(fitted, path, "classes_dtype"))
    clf.input_shape_ = tuple(int(s) for s in _field(fitted, path, "input_shape"))
    clf.channel_mean_ = np.asarray(_field(fitted, path, "channel_mean"), dtype=np.float32)
    clf.channel_std_ = np.asarray(_field(fitted, path, "channel_std"), dtype=np.float32)
    clf.train_prior_ = float(_field(fitted, path, "train_prior"))
    clf.best_epoch_ = int(_field(fitted, path, "best_epoch"))
    clf.device_ = device_

    net = NeuralNetBinaryClassifier(
        module=module,
        criterion=torch.nn.BCEWithLogitsLoss,
        lr=clf.lr,
        max_epochs=clf.max_epochs,
        batch_size=clf.batch_size,
        device=device_,
        train_split=None,
        iterator_valid__collate_fn=batch_as_is,
        iterator_valid__batch_size=clf.predict_batch_size,
        verbose=0,
        **clf._optimizer_kwargs(),
    )
    net.initialize()
    net.module_.eval()
    history = _field(document, path, "history")
    if not isinstance(history, list) or not all(isinstance(row, dict) for row in history):
        raise ValueError(f"{path}: corrupt lensclf model file: 'history' is not a list of per-epoch objects.")
    net.history = History(history)
    clf.net_ = net
    clf.history_ = net.history
    return clf
