"""What the aeon and sktime adapters share: hyperparameters and delegation.

Why: aeon's and sktime's tooling (pipelines, benchmarks, evaluation, their
estimator checks) takes only subclasses of their own base classes, whose
``fit`` and ``predict`` check and convert the data, then call the private
``_fit`` and ``_predict``. ``cbptt.aeon`` and ``cbptt.sktime`` define those
subclasses; what they do alike is written here once. Their ``__init__``
takes the hyperparameters of the wrapped cbptt estimator, read from its
signature (a parameter added to cbptt reaches the adapters with no edit
here), and their ``_fit`` and ``_predict`` hand the data, converted to
cbptt's layout, to a cbptt estimator built from those hyperparameters.
"""

import inspect
import warnings

# Tiny networks for the frameworks' estimator checks: a few epochs of a few
# units, one thread (many tiny fits on a busy machine).
TEST_PARAMS = (
    {"hidden_layer_sizes": (4,), "max_iter": 3, "random_state": 0, "n_threads": 1},
    {"cell": "lstm", "hidden_layer_sizes": (3,), "bidirectional": True,
     "pooling": "mean", "max_iter": 2, "random_state": 0, "n_threads": 1},
)

# aeon's and sktime's fit reset the estimator before training, so there is
# never a previous fit for warm_start to continue.
_NOT_FORWARDED = ("warm_start",)


def adapter_init(cbptt_class, framework_base):
    """An ``__init__`` taking the hyperparameters of ``cbptt_class`` (all but
    ``warm_start``) under their names and defaults, storing them unchanged,
    then running ``framework_base.__init__``.

    The function says its parameters through ``__signature__``, which is what
    ``get_params``, ``clone`` and the frameworks' checks read.
    """
    signature = inspect.signature(cbptt_class.__init__)
    signature = signature.replace(parameters=[
        p for p in signature.parameters.values() if p.name not in _NOT_FORWARDED
    ])

    def __init__(self, *args, **kwargs):
        arguments = signature.bind(self, *args, **kwargs)
        arguments.apply_defaults()
        for name, value in list(arguments.arguments.items())[1:]:
            setattr(self, name, value)
        framework_base.__init__(self)

    __init__.__signature__ = signature
    __init__.__doc__ = (
        f"Store the hyperparameters of cbptt.{cbptt_class.__name__} (except "
        "warm_start)."
    )
    return __init__


class RNNAdapterMixin:
    """``_fit``, ``_predict`` and ``_predict_proba`` for an adapter class.

    Subclasses set ``_cbptt_class`` and define ``_to_cbptt(X)``, which turns
    the framework's inner data type into a form cbptt reads.
    """

    _cbptt_class = None

    def _to_cbptt(self, X):
        raise NotImplementedError

    def _fit(self, X, y):
        names = list(inspect.signature(type(self).__init__).parameters)[1:]
        estimator = self._cbptt_class(**{name: getattr(self, name) for name in names})
        with warnings.catch_warnings():
            # The layout is the framework's, converted: a panel of many
            # channels and few time points is no mistake here.
            warnings.filterwarnings("ignore", message="X has shape .* cbptt reads as",
                                    category=UserWarning)
            self.estimator_ = estimator.fit(self._to_cbptt(X), y)
        return self

    def _predict(self, X):
        return self.estimator_.predict(self._to_cbptt(X))


class ClassifierAdapterMixin(RNNAdapterMixin):
    """RNNAdapterMixin with ``_predict_proba``."""

    def _predict_proba(self, X):
        # Columns follow estimator_.classes_: the sorted labels of y, as the
        # frameworks' classes_ are.
        return self.estimator_.predict_proba(self._to_cbptt(X))
