"""The score records a batch becomes, as columns: shared by the pipeline and the scale-out workers.

One definition of the output's schema (``cluster``, ``probability``, ``log_likelihood``,
``anomaly``, ``warming_up``, then ``responsibilities`` and ``x`` when asked for), so a job writes the
same records whether it runs in one process or on many workers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from connectors.base import DictColumn, constant_column

__all__ = ["score_columns", "values_raw"]


def score_columns(columns: dict[str, Any], out: tuple[np.ndarray, np.ndarray] | None,
                  flags: np.ndarray, X: np.ndarray, labels: np.ndarray | None, *,
                  responsibilities: bool = False, features: bool = True) -> dict[str, Any]:
    """The score records of a batch, as a dict of columns of length ``n_samples``.

    Parameters
    ----------
    columns : dict of str to array of shape (n_samples,)
        The columns carried from the input (source, position, carried fields).
    out : (resp, log_p) or None
        The responsibilities, shape (n_samples, K), and ``log_p`` of shape (n_samples,), computed under the
        parameters before the batch was learned; None while the model warms up (the score columns
        are then null and ``warming_up`` is true).
    flags : ndarray of bool of shape (n_samples,)
        The anomaly flags.
    X : ndarray of shape (n_samples, n_features)
        The records' values (the ``x`` column).
    labels : ndarray of int of shape (K,) or None
        The stable id of each component (refits keep ids); None: the component indices.
    responsibilities, features : bool
        Add the responsibility of every component (a dict per record keyed by component id) / the
        values.

    Returns
    -------
    dict of str to array
    """
    n = X.shape[0]
    cols = dict(columns)
    if out is None:
        null = constant_column(None, n)
        cols["cluster"] = null
        cols["probability"] = null
        cols["log_likelihood"] = null
        cols["anomaly"] = flags
        if responsibilities:
            cols["responsibilities"] = null
    else:
        resp, log_p = out
        comp = resp.argmax(axis=1)
        if labels is None or len(labels) != resp.shape[1]:
            labels = np.arange(resp.shape[1])
        cols["cluster"] = labels[comp]
        cols["probability"] = np.take_along_axis(resp, comp[:, None], axis=1)[:, 0]
        cols["log_likelihood"] = log_p
        cols["anomaly"] = flags
        if responsibilities:
            cols["responsibilities"] = DictColumn(resp, [str(int(k)) for k in labels])
    # the same columns in every batch (a columnar sink keeps one schema)
    cols["warming_up"] = np.full(n, out is None)
    if features:
        cols["x"] = X
    return cols


def values_raw(x: np.ndarray) -> bytes:
    """The raw record of a refused row: its values as a JSON array (``repr`` of each float)."""
    return ("[" + ", ".join(map(repr, x.tolist())) + "]").encode()
