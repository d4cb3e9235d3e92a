"""lensclf: find strong gravitational lenses in astronomical cutouts.

The public API is re-exported here from private modules that each hold one job.
"""

__version__ = "0.1.0"

from ._errors import LensDataError, LensDataWarning

# --- public re-exports (one line per module; keep sorted by module) ---
from ._classifier import LensClassifier
from ._data import LensFileArray, load_lens_dir, open_lens_stack, read_lens_file
from ._io import load_model, read_model_metadata, save_model
from .metrics import SCORERS, evaluate_scores, roc_auc_ci, tpr_at_fpr, tpr_at_fpr_scorer
from .plots import composite_rgb, plot_confusion_matrix, plot_error_gallery, plot_history, plot_precision_recall, plot_roc, plot_score_histogram
from .report import format_summary, write_report
from .simulate import make_lenses, write_lens_dir

__all__ = [name for name in dir() if not name.startswith("_")]
