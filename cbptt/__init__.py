"""cbptt: fast backpropagation through time on the CPU.

Cython kernels train recurrent networks (Elman, LSTM, GRU; stacked,
bidirectional) with OpenMP across the minibatch. :class:`RNNClassifier` and
:class:`RNNRegressor` (one output per sequence), :class:`RNNStepClassifier` and
:class:`RNNStepRegressor` (one per step) wrap them as scikit-learn estimators;
:func:`loss_and_grad` exposes one forward and backward pass;
:func:`channels_last` converts aeon's and sktime's ``(n, channels, length)``
layout to cbptt's ``(n, length, features)``.
"""

# The one place the version is written; pyproject.toml reads it from here.
__version__ = "0.1.0.dev0"

from cbptt._classifier import RNNClassifier
from cbptt._config import show_config
from cbptt._functional import loss_and_grad
from cbptt._layout import channels_last
from cbptt._onnx import to_onnx
from cbptt._regressor import RNNRegressor
from cbptt._step import RNNStepClassifier, RNNStepRegressor

__all__ = ["RNNClassifier", "RNNRegressor", "RNNStepClassifier", "RNNStepRegressor",
           "channels_last", "loss_and_grad", "show_config", "to_onnx", "__version__"]
