"""Turn what users pass as sequences into one padded array and a length vector.

Why: every entry point (fit, predict, loss_and_grad) accepts the same three
forms of input, and the kernels need one form only: a C-contiguous
(n_samples, n_timesteps, n_features) float32/float64 array plus the length of
each sequence. Validation happens here, once, with messages that say what was
wrong and what to pass instead; the user's data are never modified.

Accepted forms:

* 3-D array ``(n_samples, n_timesteps, n_features)``;
* 2-D array ``(n_samples, n_timesteps)``: univariate sequences;
* a list of ``(n_timesteps_i, n_features)`` arrays (or 1-D arrays, univariate)
  whose lengths may differ.
"""

import numbers
import warnings

import numpy as np
from scipy import sparse
from sklearn import get_config
from sklearn.utils.validation import check_array

from cbptt._kernels._utils import all_finite
from cbptt._layout import (
    channels_first_list_hint,
    is_array_of_sequences,
    transposed_layout_hint,
)

FLOAT_DTYPES = (np.float64, np.float32)

_FORMS = (
    "Pass a 3-D array (n_samples, n_timesteps, n_features), a 2-D array "
    "(n_samples, n_timesteps) of univariate sequences, or a list of "
    "(n_timesteps_i, n_features) arrays."
)

_SPARSE = (
    "Sparse data was passed for {name}, but dense data is required: sequences "
    "are read step by step. Use .toarray() to convert it to a dense array."
)


def _reject_complex(X, name):
    # check_array would reject it too, but prints the whole array in the
    # message (or, for an object array, fails in float()).
    dtype = getattr(X, "dtype", None)
    if isinstance(dtype, np.dtype) and (
        dtype.kind == "c"
        or (dtype.kind == "O" and any(np.iscomplexobj(v) for v in X.ravel()))
    ):
        raise ValueError(
            f"Complex data not supported: {name} has dtype {dtype}. Pass real "
            "numbers (e.g. the real and imaginary parts as two features)."
        )


def _check_one_sequence(seq, index, dtype, ensure_all_finite):
    # (Sparse sequences were rejected by check_sequences already.)
    if not hasattr(seq, "dtype"):
        seq = np.asarray(seq)
    _reject_complex(seq, f"X[{index}]")
    seq = check_array(
        seq,
        dtype=dtype,
        ensure_all_finite=ensure_all_finite,
        ensure_2d=False,
        allow_nd=True,
        ensure_min_samples=0,
        input_name=f"X[{index}]",
    )
    if seq.ndim == 1:
        seq = seq[:, np.newaxis]
    if seq.ndim != 2:
        raise ValueError(
            f"Sequence X[{index}] has {seq.ndim} dimensions; each sequence in a "
            "list must be a (n_timesteps, n_features) array or a 1-D array."
        )
    if seq.shape[0] == 0:
        raise ValueError(
            f"Sequence X[{index}] is empty (0 time steps); every sequence needs "
            "at least one step."
        )
    return seq


def _is_ragged_list(X):
    if not isinstance(X, (list, tuple)) or len(X) == 0:
        return False
    try:
        np.asarray(X)
    except ValueError:
        return True
    return False


def check_sequences(
    X, *, dtype=FLOAT_DTYPES, n_features=None, estimator_name=None, ensure_all_finite=True
):
    """Validate sequences; return ``(X_padded, lengths)``.

    Parameters
    ----------
    X : array-like or list of array-like
        The sequences, in one of the forms in the module docstring.
    dtype : dtype or tuple of dtypes
        float32 input is kept as float32; anything else becomes float64
        unless a single dtype is given.
    n_features : int or None
        If given, the number of features per step X must have.
    estimator_name : str or None
        Used in the message when ``n_features`` does not match.
    ensure_all_finite : bool
        Reject NaN and infinity. Callers that know the valid steps only (user
        given lengths) pass False and check those steps themselves.

    Returns
    -------
    X_padded : ndarray of shape (n_samples, n_timesteps, n_features)
        C-contiguous; steps past a sequence's length are zero.
    lengths : ndarray of shape (n_samples,), dtype intp
    """
    if isinstance(X, (list, tuple)) and len(X) == 0:
        raise ValueError(
            "Found 0 sequences in X (an empty list), while a minimum of 1 is "
            f"required. {_FORMS}"
        )
    if sparse.issparse(X):
        raise TypeError(_SPARSE.format(name="X"))
    if is_array_of_sequences(X):
        X = list(X)
    if isinstance(X, (list, tuple)) and any(sparse.issparse(seq) for seq in X):
        raise TypeError(_SPARSE.format(name="a sequence in X"))
    if _is_ragged_list(X):
        seqs = [
            _check_one_sequence(seq, i, dtype, ensure_all_finite) for i, seq in enumerate(X)
        ]
        n_feat = seqs[0].shape[1]
        for i, seq in enumerate(seqs):
            if seq.shape[1] != n_feat:
                hint = channels_first_list_hint([s.shape for s in seqs])
                raise ValueError(
                    f"All sequences must have the same number of features: X[0] "
                    f"has {n_feat} and X[{i}] has {seq.shape[1]}."
                    + (f" {hint}" if hint else "")
                )
        layout_hint = None  # no layout guess for lists of sequences
        out_dtype = np.result_type(*seqs)
        lengths = np.array([len(seq) for seq in seqs], dtype=np.intp)
        X_padded = np.zeros((len(seqs), lengths.max(), n_feat), dtype=out_dtype)
        for i, seq in enumerate(seqs):
            X_padded[i, : len(seq)] = seq
    else:
        # Not np.ndim(X): array-likes that only implement __array__ refuse it.
        if not isinstance(getattr(X, "ndim", None), numbers.Integral):
            X = np.asarray(X)
        ndim = X.ndim
        _reject_complex(X, "X")
        if ndim not in (2, 3):
            hint = (
                " (one univariate sequence x is x.reshape(1, -1))" if ndim == 1 else ""
            )
            raise ValueError(
                f"X must be 2-D or 3-D, got an array with {ndim} dimension(s). "
                f"Reshape your data{hint}. {_FORMS}"
            )
        X_padded = check_array(X, dtype=dtype, allow_nd=True, order="C",
                               ensure_all_finite=False, input_name="X")
        if (ensure_all_finite and not get_config()["assume_finite"]
                and not all_finite(X_padded.reshape(-1))):
            # check_array's own check, for its message (NaN or infinity); its
            # sum of +inf and -inf would add a RuntimeWarning to the error.
            with np.errstate(invalid="ignore", over="ignore"):
                check_array(X_padded, allow_nd=True, ensure_all_finite=True,
                            input_name="X")
        if X_padded.ndim == 2:
            X_padded = X_padded[:, :, np.newaxis]
        if X_padded.shape[1] == 0 or X_padded.shape[2] == 0:
            raise ValueError(
                f"X has shape {X_padded.shape}: sequences need at least one time "
                "step and one feature."
            )
        layout_hint = transposed_layout_hint(X_padded.shape) if ndim == 3 else None
        if layout_hint and n_features is None:  # later calls must match the first
            warnings.warn(layout_hint, UserWarning)
        lengths = np.full(X_padded.shape[0], X_padded.shape[1], dtype=np.intp)
    if n_features is not None and X_padded.shape[2] != n_features:
        name = estimator_name or "the model"
        if X_padded.shape[1] != n_features:  # transposed, it would not fit either
            layout_hint = None
        raise ValueError(
            f"X has {X_padded.shape[2]} features, but {name} is expecting "
            f"{n_features} features as input (features per time step; the number "
            "of time steps may differ)." + (f" {layout_hint}" if layout_hint else "")
        )
    return X_padded, lengths


def check_lengths(lengths, n_samples, n_timesteps):
    """Validate user-given sequence lengths: integers in [1, n_timesteps]."""
    lengths = np.asarray(lengths)
    if lengths.shape != (n_samples,):
        raise ValueError(
            f"lengths must have shape ({n_samples},), one per sequence; got "
            f"shape {lengths.shape}."
        )
    if lengths.dtype.kind not in "iu" and not (
        lengths.dtype.kind == "f" and np.all(np.mod(lengths, 1) == 0)
    ):
        raise ValueError(f"lengths must be integers; got dtype {lengths.dtype}.")
    if n_samples and (lengths.min() < 1 or lengths.max() > n_timesteps):
        raise ValueError(
            f"lengths must lie in [1, {n_timesteps}] (the number of time steps "
            f"of X); got values in [{lengths.min()}, {lengths.max()}]."
        )
    return np.ascontiguousarray(lengths, dtype=np.intp)


def check_positive_int_or_none(value, name):
    """Return value if it is None or an integer >= 1, else raise."""
    if value is None:
        return None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1:
        return int(value)
    raise ValueError(f"{name} must be None or an integer >= 1; got {value!r}.")
