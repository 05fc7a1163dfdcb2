"""Tools for people who test cbptt's estimators with scikit-learn's checks.

Why: scikit-learn's common checks (``check_estimator``,
``parametrize_with_checks``) assume tabular data, where a 2-D ``X`` is
(n_samples, n_features) and ``y`` holds one target per row. cbptt reads a
2-D ``X`` as univariate sequences, and its per-step estimators take a target
at every step, so some checks fail by design; with the default settings
(float32, ``batch_size="auto"``) the sample-weight check also misses its
float64 tolerance. This module says which, and why, in the form those functions
accept, so that a user sees the reasons instead of unexplained failures;
cbptt's own test suite uses the same list.
"""

from numbers import Integral

from cbptt._classifier import RNNClassifier
from cbptt._regressor import RNNRegressor
from cbptt._step import RNNStepClassifier, RNNStepRegressor

__all__ = ["expected_failed_checks"]

_UNIVARIATE = (
    "a 2-D X is (n_samples, n_timesteps) univariate sequences: n_features_in_ "
    "is 1, not X.shape[1]"
)
_ANY_LENGTH = (
    "a 2-D X is univariate sequences and sequences may have any length, so a "
    "different X.shape[1] (number of time steps) is not an error"
)
_SEQUENCE_CHECKS = {
    "check_n_features_in": _UNIVARIATE,
    "check_n_features_in_after_fitting": _UNIVARIATE,
    "check_estimators_partial_fit_n_features": _ANY_LENGTH + " between partial_fit calls",
}
# check_regressors_train, unlike check_classifiers_train, does not predict on
# a different X.shape[1].
_CLASSIFIER_CHECKS = {
    **_SEQUENCE_CHECKS,
    "check_classifiers_train": _ANY_LENGTH + " at predict",
}

_PER_STEP_TARGETS = (
    "y holds a target for every step (an (n_samples, n_timesteps) array or a "
    "list of one array per sequence); the check fits on one target per sequence"
)
_STEP_CHECKS = dict.fromkeys(
    [
        "check_dict_unchanged",
        "check_dont_overwrite_parameters",
        "check_dtype_object",
        "check_estimators_dtypes",
        "check_estimators_fit_returns_self",
        "check_estimators_nan_inf",
        "check_estimators_overwrite_params",
        "check_estimators_partial_fit_n_features",
        "check_estimators_pickle",
        "check_f_contiguous_array_estimator",
        "check_fit2d_1feature",
        "check_fit2d_1sample",
        "check_fit2d_predict1d",
        "check_fit_check_is_fitted",
        "check_fit_idempotent",
        "check_fit_score_takes_y",
        "check_methods_sample_order_invariance",
        "check_methods_subset_invariance",
        "check_n_features_in",
        "check_n_features_in_after_fitting",
        "check_non_transformer_estimators_n_iter",
        "check_pipeline_consistency",
        "check_positive_only_tag_during_fit",
        "check_readonly_memmap_input",
        "check_sample_weight_equivalence_on_dense_data",
        "check_sample_weights_list",
        "check_sample_weights_not_an_array",
        "check_sample_weights_not_overwritten",
        "check_sample_weights_pandas_series",
        "check_sample_weights_shape",
        "check_supervised_y_2d",
    ],
    _PER_STEP_TARGETS,
)
_STEP_CHECKS["check_requires_y_none"] = (
    "fit(X, None) raises a TypeError, not the ValueError the check expects"
)
_STEP_CLASSIFIER_CHECKS = {
    **_STEP_CHECKS,
    **dict.fromkeys(
        [
            "check_classifier_data_not_an_array",
            "check_classifiers_classes",
            "check_classifiers_one_label",
            "check_classifiers_one_label_sample_weights",
            "check_classifiers_regression_target",
            "check_classifiers_train",
        ],
        _PER_STEP_TARGETS,
    ),
}
_STEP_REGRESSOR_CHECKS = {
    **_STEP_CHECKS,
    **dict.fromkeys(
        [
            "check_regressor_data_not_an_array",
            "check_regressors_int",
            "check_regressors_no_decision_function",
            "check_regressors_train",
        ],
        _PER_STEP_TARGETS,
    ),
}

# check_sample_weight_equivalence_on_dense_data fits on 15 samples with
# integer weights (0 to 4) and on those samples repeated (at most 60 rows),
# and compares the predictions to rtol=1e-7.
_WEIGHT_CHECK = "check_sample_weight_equivalence_on_dense_data"
_WEIGHT_CHECK_ROWS = 60


def _weight_check_reason(estimator):
    """Why the sample-weight check fails for this estimator's settings, or
    None where it passes (float64 and one minibatch for all the data)."""
    causes = []
    if estimator.dtype != "float64":
        causes.append(
            f"the network trains in {estimator.dtype}, whose rounding makes the "
            "two fits differ by more than the check's rtol=1e-7"
        )
    batch_size = estimator.batch_size
    if not (isinstance(batch_size, Integral) and batch_size >= _WEIGHT_CHECK_ROWS):
        causes.append(
            f"batch_size={batch_size!r} cuts the repeated samples into more "
            "minibatches, so more optimizer steps, than the weighted ones"
        )
    if not causes:
        return None
    return (
        "integer sample weights equal repeated samples in the loss, but "
        + " and ".join(causes)
        + f"; the check passes with dtype='float64' and batch_size>={_WEIGHT_CHECK_ROWS}"
    )


# A user's subclass of one of them gets its parent's list.
_EXPECTED = [
    (RNNStepClassifier, _STEP_CLASSIFIER_CHECKS),
    (RNNStepRegressor, _STEP_REGRESSOR_CHECKS),
    (RNNClassifier, _CLASSIFIER_CHECKS),
    (RNNRegressor, _SEQUENCE_CHECKS),
]


def expected_failed_checks(estimator):
    """scikit-learn's common checks that fail by design for a cbptt estimator.

    Pass the result as the ``expected_failed_checks`` argument of
    :func:`sklearn.utils.estimator_checks.check_estimator`, or the function
    itself as that of
    :func:`~sklearn.utils.estimator_checks.parametrize_with_checks`
    (scikit-learn 1.6 and later): these checks are then reported as expected
    failures, with the reason, and every other check runs as usual.

    The checks assume tabular data. For :class:`~cbptt.RNNClassifier` and
    :class:`~cbptt.RNNRegressor`, a 2-D ``X`` is (n_samples, n_timesteps)
    univariate sequences, so ``n_features_in_`` is 1 and a different number
    of columns at predict or partial_fit time is a different length, not an
    error. :class:`~cbptt.RNNStepClassifier` and
    :class:`~cbptt.RNNStepRegressor` take a target at every step, while the
    checks fit on one target per sequence, so every check that fits fails
    before it tests anything.

    ``check_sample_weight_equivalence_on_dense_data`` compares a fit with
    integer sample weights to a fit on repeated samples, to a float64
    tolerance. With the default ``dtype="float32"``, or with minibatches
    that do not hold all of its (at most 60) repeated samples, such as
    ``batch_size="auto"``, the two fits differ by more, so it is listed too;
    with ``dtype="float64"`` and ``batch_size=64`` it passes.

    Parameters
    ----------
    estimator : RNNClassifier, RNNRegressor, RNNStepClassifier or RNNStepRegressor
        An instance of one of cbptt's estimators (or of a subclass).

    Returns
    -------
    checks : dict
        ``{check_name: reason}``: the name of each check function that is
        expected to fail, and why. A new dict on each call.

    Examples
    --------
    >>> from cbptt import RNNRegressor
    >>> from cbptt.utils import expected_failed_checks
    >>> checks = expected_failed_checks(RNNRegressor(dtype="float64", batch_size=64))
    >>> sorted(checks)
    ['check_estimators_partial_fit_n_features', 'check_n_features_in', 'check_n_features_in_after_fitting']
    >>> checks["check_n_features_in"]
    'a 2-D X is (n_samples, n_timesteps) univariate sequences: n_features_in_ is 1, not X.shape[1]'
    >>> defaults = expected_failed_checks(RNNRegressor())  # float32, batch_size="auto"
    >>> sorted(set(defaults) - set(checks))
    ['check_sample_weight_equivalence_on_dense_data']
    """
    if isinstance(estimator, type):
        raise TypeError(
            f"expected_failed_checks takes an estimator instance, got the class "
            f"{estimator.__name__}; call it as expected_failed_checks({estimator.__name__}())."
        )
    for cls, checks in _EXPECTED:
        if isinstance(estimator, cls):
            checks = dict(checks)
            reason = _weight_check_reason(estimator)
            if reason is not None:  # the per-step estimators have a reason already
                checks.setdefault(_WEIGHT_CHECK, reason)
            return checks
    raise TypeError(
        "expected_failed_checks takes an instance of RNNClassifier, RNNRegressor, "
        f"RNNStepClassifier or RNNStepRegressor, got {type(estimator).__name__}."
    )
