"""Model files: a trained network and its description in one safetensors file, safe to share.

Models
    :func:`write_model` writes a fitted network (plain state: parameters,
    fitted attributes, the module's tensors, the history) to ONE
    `safetensors <https://huggingface.co/docs/safetensors>`_ file (recommended
    name: ``model.safetensors``). Its tensors are the network's state dict
    (``channel_mean``, ``channel_std`` and ``backbone.*``); its header holds a
    JSON document with everything else needed to predict: the estimator's
    parameters, the class labels, the input shape, the training prior and
    history, and free-form metadata such as test metrics. :func:`read_model`
    reads it back without executing any code from the file (safetensors holds
    only numbers and text, unlike pickle); ``LensClassifier.load`` builds
    itself from what it returns. :func:`read_model_metadata` reads the JSON
    document alone. This module never imports the estimator.

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
      ``in_channels``, and ``scaling`` when it is not ``"dataset"``), ``history`` (one object per epoch, without the
      per-batch lists; non-finite numbers as ``null``), ``training_data``,
      ``extra`` and ``tensors_sha256`` (a checksum of the tensors, verified on
      loading).
"""

import datetime
import hashlib
import json
import math
import os
import warnings

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from skorch.history import History

from ._files import atomic_write
from ._files import json_default as _json_default
from ._history import history_records
from ._version import __version__

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "SavedModel", "read_model", "read_model_metadata", "write_model"]

#: Name of the model file format, stored in every model file.
FORMAT_NAME = "lensclf-model"
#: Newest version of the model file format this lensclf writes and reads.
FORMAT_VERSION = 1

# safetensors metadata keys (all values are strings)
_KEY_FORMAT = "lensclf_format"
_KEY_VERSION = "lensclf_format_version"
_KEY_DOCUMENT = "lensclf_metadata"


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


def write_model(path, estimator, params, fitted, module, history, *, overwrite=False, extra=None,
                training_data=None):
    """Write a fitted network and its description to one safetensors file, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file. Missing parent folders are created.
    estimator : str
        The estimator's class name.
    params : dict
        The estimator's ``get_params(deep=False)``.
    fitted : dict
        ``classes``, ``input_shape``, ``channel_mean``, ``channel_std``,
        ``train_prior``, ``best_epoch``, ``device``.
    module : LensNet
        The trained network; its state dict becomes the file's tensors.
    history : skorch History or list of dict
        The training history (per-batch lists are not saved).
    overwrite : bool, default=False
        Replace an existing file (otherwise :class:`FileExistsError`).
    extra, training_data : dict or None
        JSON-serialisable extras, read back under ``"extra"`` and ``"training_data"``.

    Returns
    -------
    str
        The path written.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a folder; give the model a file name such as {os.path.join(path, 'model.safetensors')}.")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it.")
    extra = _check_json_section("extra_metadata", extra)
    training_data = _check_json_section("training_data", training_data)

    saved_params, not_saved = {}, {}
    for name, value in params.items():
        json_value, ok = _json_param(value)
        if ok:
            saved_params[name] = json_value
        else:
            not_saved[name] = repr(value)

    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in module.state_dict().items()}
    backbone = module.backbone
    network = {
        "class": "LensNet",
        "arch": _network_arch(backbone, params.get("arch")),
        "stem": "small" if isinstance(backbone.maxpool, torch.nn.Identity) else "standard",
        "input_size": module.input_size,
        "in_channels": int(fitted["input_shape"][0]),
    }
    if module.scaling != "dataset":  # (files of lensclf 0.1.0 have no scaling: "dataset")
        network["scaling"] = module.scaling
    classes = np.asarray(fitted["classes"])
    document = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "lensclf_version": __version__,
        "torch_version": torch.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "estimator": estimator,
        "params": saved_params,
        "params_not_saved": not_saved,
        "fitted": {
            "classes": _json_labels(classes),
            "classes_dtype": classes.dtype.str,
            "input_shape": [int(s) for s in fitted["input_shape"]],
            "channel_mean": [float(v) for v in fitted["channel_mean"]],
            "channel_std": [float(v) for v in fitted["channel_std"]],
            "train_prior": float(fitted["train_prior"]),
            "best_epoch": int(fitted["best_epoch"]),
            "device": str(fitted["device"]),
        },
        "network": network,
        "history": history_records(history),
        "training_data": training_data,
        "extra": extra,
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


class SavedModel:
    """What a model file holds, checked: everything an estimator needs to rebuild itself.

    Attributes
    ----------
    path : str
    document : dict
        The file's JSON document (see the module documentation).
    params : dict
        The saved estimator parameters this lensclf knows, restored to Python values.
    fitted : dict
        ``classes`` (ndarray), ``input_shape`` (tuple), ``channel_mean``,
        ``channel_std`` (float32 arrays), ``train_prior``, ``best_epoch``.
    network : dict
        :class:`~lensclf._models.LensNet` arguments (``arch``, ``in_channels``,
        ``stem``, ``input_size``, ``scaling``).
    history : skorch History
    """

    def __init__(self, path, document, params, fitted, network, history, state):
        self.path, self.document, self.params = path, document, params
        self.fitted, self.network, self.history = fitted, network, history
        self._state = state

    def load_into(self, module):
        """Give ``module`` (built on the meta device from :attr:`network`) the file's tensors."""
        path, state = self.path, self._state
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
        return module


def read_model(path, known_params):
    """Read and check a model file written by :func:`write_model`; no code from the file is run.

    Parameters
    ----------
    path : str or os.PathLike
        A lensclf model file (e.g. ``model.safetensors``).
    known_params : dict
        The parameters (with defaults) of the estimator that will load it;
        saved parameters it does not know are left out with a warning.

    Returns
    -------
    SavedModel

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not a lensclf model file, corrupt or truncated, or written in a newer
        format version than this lensclf reads.
    """
    path = os.fspath(path)
    document = _parse_document(path, _open_header(path))
    saved = _field(document, path, "params")
    if not isinstance(saved, dict):
        raise ValueError(f"{path}: corrupt lensclf model file: 'params' is not a JSON object.")
    unknown = sorted(set(saved) - set(known_params))
    if unknown:
        warnings.warn(
            f"{path}: ignoring parameters this lensclf does not know: {unknown} "
            f"(the file was written by lensclf {document.get('lensclf_version')}).",
            UserWarning,
            stacklevel=3,
        )
    params = {name: _restore_param(name, value, path) for name, value in saved.items() if name in known_params}
    network = _field(document, path, "network")
    fitted = _field(document, path, "fitted")
    try:
        network_args = {
            "arch": _field(network, path, "arch"),
            "in_channels": int(_field(network, path, "in_channels")),
            "stem": _field(network, path, "stem"),
            "input_size": _field(network, path, "input_size"),
            "scaling": network.get("scaling", "dataset"),
        }
        fitted_values = {
            "classes": _restore_labels(path, _field(fitted, path, "classes"), _field(fitted, path, "classes_dtype")),
            "input_shape": tuple(int(s) for s in _field(fitted, path, "input_shape")),
            "channel_mean": np.asarray(_field(fitted, path, "channel_mean"), dtype=np.float32),
            "channel_std": np.asarray(_field(fitted, path, "channel_std"), dtype=np.float32),
            "train_prior": float(_field(fitted, path, "train_prior")),
            "best_epoch": int(_field(fitted, path, "best_epoch")),
        }
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ValueError) and "corrupt" in str(exc):
            raise
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
    history = _field(document, path, "history")
    if not isinstance(history, list) or not all(isinstance(row, dict) for row in history):
        raise ValueError(f"{path}: corrupt lensclf model file: 'history' is not a list of per-epoch objects.")
    return SavedModel(path, document, params, fitted_values, network_args, History(history), state)
