"""cbptt: fast backpropagation through time on the CPU.

Cython kernels train Elman recurrent networks with OpenMP across the
minibatch; :class:`RNNClassifier` wraps them as a scikit-learn classifier and
:func:`loss_and_grad` exposes one forward and backward pass.
"""

from cbptt._classifier import RNNClassifier
from cbptt._functional import loss_and_grad

__version__ = "0.1.0.dev0"

__all__ = ["RNNClassifier", "loss_and_grad", "__version__"]
