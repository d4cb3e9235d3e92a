"""Weight averaging: an exponential moving average (EMA) of the weights, validated and kept in place of them.

:class:`WeightAveraging` is the skorch callback that
:class:`~lensclf.LensClassifier` adds when ``ema_epochs`` is set. It keeps
torch's :class:`~torch.optim.swa_utils.AveragedModel` beside the trained
network and updates it after every training step with decay
``1 - 1 / (ema_epochs * steps per epoch)``: the average of roughly the last
``ema_epochs`` epochs of weights (batch-norm statistics included). Every epoch,
:class:`~lensclf._net.LensNeuralNet` loads the averaged weights into the
network for the validation pass, so the validation loss and AUC (and with
them a plateau schedule's learning-rate cuts), best-epoch selection (early
stopping's best weights) and the model ``fit`` returns are those of the
average; the trained ("live") weights go back into the network when the next
epoch starts, and training goes on from them. :class:`~lensclf._checkpoint.TrainingCheckpoint`
saves both, so a resumed fit goes on exactly.
"""

import torch
from skorch.callbacks import Callback
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

__all__ = ["WeightAveraging", "ema_decay"]


def ema_decay(ema_epochs, steps_per_epoch):
    """The per-step decay of an average over ``ema_epochs`` epochs of ``steps_per_epoch`` steps."""
    return 1.0 - 1.0 / max(float(ema_epochs) * max(int(steps_per_epoch), 1), 1.0)


class WeightAveraging(Callback):
    """Keep an exponential moving average of the network's weights and validate it.

    Parameters
    ----------
    decay : float
        Weight of the old average at each training step (see :func:`ema_decay`).

    Attributes
    ----------
    average_ : torch.optim.swa_utils.AveragedModel
        The averaged network (parameters and buffers).
    live_ : dict or None
        The trained weights while the averaged ones are in the network
        (between a validation pass and the next epoch), else None.
    """

    def __init__(self, decay):
        self.decay = decay

    def initialize(self):
        self.average_ = None
        self.live_ = None
        return self

    def on_train_begin(self, net, **kwargs):
        # (a resumed fit then loads the saved average into it: TrainingCheckpoint comes later)
        self.average_ = AveragedModel(net.module_, multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=True)
        self.live_ = None

    def on_batch_end(self, net, training=False, **kwargs):
        if training:
            with torch.no_grad():
                self.average_.update_parameters(net.module_)

    def swap_in(self, net):
        """Put the averaged weights into the network, keeping the trained ones aside."""
        if self.live_ is None and self.average_ is not None:
            self.live_ = {name: tensor.detach().clone() for name, tensor in net.module_.state_dict().items()}
            net.module_.load_state_dict(self.average_.module.state_dict())

    def swap_out(self, net):
        """Put the trained weights back (training goes on from them)."""
        if self.live_ is not None:
            net.module_.load_state_dict(self.live_)
            self.live_ = None

    def live_state_dict(self, net):
        """The trained weights, wherever they are at the moment."""
        return self.live_ if self.live_ is not None else net.module_.state_dict()

    def state_dict(self):
        """The average's state (for checkpoints)."""
        return self.average_.state_dict()

    def load_state_dict(self, state):
        self.average_.load_state_dict(state)

    def on_epoch_begin(self, net, **kwargs):
        self.swap_out(net)

    def on_train_end(self, net, **kwargs):
        # The model fit returns is the average: the last validated one, or, after an interruption during a
        # training pass, the average so far (early stopping, which comes later, then loads its best).
        self.swap_in(net)
        self.live_ = None

    def release(self):
        """Forget the average and the trained copy (before pickling a fitted model)."""
        self.average_ = None
        self.live_ = None
