"""Sphinx configuration for the cbptt documentation.

Build with ``sphinx-build -W -b html docs docs/_build/html`` from the
repository root; the examples are checked with
``python -m sphinx -b doctest docs docs/_build/doctest``. cbptt must be
importable (installed, with its extensions built).
"""

import cbptt

project = "cbptt"
author = "The cbptt developers"
copyright = "the cbptt developers"
release = cbptt.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.doctest",
]

exclude_patterns = ["_build"]
root_doc = "index"

# Docstrings are numpydoc style.
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False

autodoc_member_order = "bysource"
autodoc_typehints = "none"

# The examples print warnings (e.g. ConvergenceWarning for short fits) to
# stderr; only stdout is compared.
doctest_global_setup = """
import warnings
warnings.simplefilter("ignore")
"""

html_theme = "alabaster"
html_title = f"cbptt {release}"
html_theme_options = {
    "description": "Backpropagation through time on the CPU",
    "fixed_sidebar": True,
}

# RNNClassifier inherits ``score`` from scikit-learn's ClassifierMixin, whose
# docstring describes tabular X and links into scikit-learn's own docs. Show a
# docstring that fits sequences instead (before napoleon parses it).
_SCORE_DOC = """Mean accuracy of ``self.predict(X)`` with respect to ``y``.

Parameters
----------
X : array-like or list of array-like
    Sequences, in any of the forms that ``fit`` accepts.
y : array-like of shape (n_samples,)
    True labels.
sample_weight : array-like of shape (n_samples,), default=None
    Weight of each sample in the mean.

Returns
-------
score : float
    The (weighted) fraction of sequences whose label is predicted correctly.
"""


# RNNRegressor inherits ``score`` from RegressorMixin, whose docstring refers
# to a label of scikit-learn's docs; the same replacement.
_R2_SCORE_DOC = """Coefficient of determination :math:`R^2` of ``self.predict(X)``.

:math:`R^2 = 1 - u / v`, with :math:`u` the residual sum of squares
``((y - y_pred) ** 2).sum()`` and :math:`v` the total sum of squares
``((y - y.mean()) ** 2).sum()``. The best score is 1.0; predicting the mean
of ``y`` scores 0.0, and worse predictions score below. With several outputs
it is the unweighted mean over the outputs (as
:func:`sklearn.metrics.r2_score` with ``multioutput="uniform_average"``).

Parameters
----------
X : array-like or list of array-like
    Sequences, in any of the forms that ``fit`` accepts.
y : array-like of shape (n_samples,) or (n_samples, n_outputs)
    True values.
sample_weight : array-like of shape (n_samples,), default=None
    Weight of each sample.

Returns
-------
score : float
    :math:`R^2` of ``self.predict(X)`` with respect to ``y``.
"""

_INHERITED_SCORE_DOCS = {
    "cbptt.RNNClassifier.score": _SCORE_DOC,
    "cbptt.RNNRegressor.score": _R2_SCORE_DOC,
}


def _replace_inherited_score_doc(app, what, name, obj, options, lines):
    if name in _INHERITED_SCORE_DOCS:
        lines[:] = _INHERITED_SCORE_DOCS[name].splitlines()


# numpydoc's "beta_1, beta_2 : float, default=0.9, 0.999" would give both
# parameters both defaults in napoleon's output; list them one by one.
_BETAS = "beta_1, beta_2 : float, default=0.9, 0.999"


def _split_beta_params(app, what, name, obj, options, lines):
    if name not in ("cbptt.RNNClassifier", "cbptt.RNNRegressor",
                    "cbptt.RNNStepClassifier", "cbptt.RNNStepRegressor"):
        return
    for k, line in enumerate(lines):
        if line.strip() == _BETAS:
            indent = line[: len(line) - len(line.lstrip())]
            end = k + 1
            while end < len(lines) and lines[end].startswith(indent + " "):
                end += 1
            description = lines[k + 1 : end]
            lines[k:end] = (
                [f"{indent}beta_1 : float, default=0.9", *description,
                 f"{indent}beta_2 : float, default=0.999", *description]
            )
            break


def setup(app):
    app.connect("autodoc-process-docstring", _replace_inherited_score_doc, priority=400)
    app.connect("autodoc-process-docstring", _split_beta_params, priority=400)
