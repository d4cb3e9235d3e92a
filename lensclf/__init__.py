"""lensclf: find strong gravitational lenses in astronomical cutouts.

The public API is re-exported here from private modules that each hold one job.
"""

from ._version import __version__

from ._errors import LensDataError, LensDataWarning

# --- public re-exports (one line per module; keep sorted by module) ---
from ._classdirs import load_class_folders
from ._classifier import LensClassifier, load_model, save_model
from ._filearray import LensFileArray
from ._layout import load_lens_dir
from ._modelfile import read_model_metadata
from ._npy import open_lens_stack, read_lens_file
from ._zarr import LensZarrArray, pack_cutouts
from .metrics import SCORERS, evaluate_scores, purity_at_top, roc_auc_ci, tpr_at_fpr, tpr_at_fpr_scorer, tpr_at_n_false_positives
from .plots import composite_rgb, plot_confusion_matrix, plot_error_gallery, plot_history, plot_precision_recall, plot_roc, plot_score_histogram
from .report import format_summary, write_report
from .simulate import make_lenses, write_lens_dir
from .workflows import run_demo, run_evaluate, run_pack, run_predict, run_simulate, run_train

__all__ = [name for name in dir() if not name.startswith("_")]
