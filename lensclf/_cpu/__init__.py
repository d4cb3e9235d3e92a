"""CPU speed tricks, applied only where a network runs on the CPU, behind one switch.

``LensClassifier(cpu_fast_paths=True)`` (the default) runs the ResNet's forward
and backward passes through :func:`resnet_forward` on CPU: the same function as
torchvision's, up to float rounding, with a faster memory layout, stem order
and tap-wise convolutions on small maps. The network itself stays a plain
torchvision ResNet, so saved models and pickles hold no class of this package.
``cpu_fast_paths="retain_heap"`` also keeps freed memory in glibc's heap while
``fit`` trains (:func:`retained_heap`), a process-wide setting, hence opt-in.
``False`` turns everything off. On a GPU none of this applies.
"""

from .heap import retained_heap
from .resnet import resnet_forward

__all__ = ["FAST_PATH_MODES", "resnet_forward", "retained_heap"]

#: Accepted values of ``LensClassifier(cpu_fast_paths=...)``.
FAST_PATH_MODES = (True, False, "retain_heap")
