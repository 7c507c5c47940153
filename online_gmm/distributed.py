"""Gaussian mixtures on data larger than one machine: Dask map-reduce of sufficient statistics.

The statistics of a mixture are additive (Chan's merge), so one EM iteration over a Dask collection
is a map-reduce on the shared core:

* **map**: every chunk computes ``Scorer(params).expected_statistics(chunk, w)`` on the worker that
  holds (or generates) it -- the same E-step kernels as the in-memory path;
* **reduce**: a tree of :meth:`SufficientStatistics.__add__` merges (fan-in ``split_every``);
* **M-step**: ``stats.to_params(reg_covar)`` once, on the client, inside the EM loop
  :func:`online_gmm._em.run_em` (its ``e_step`` hook), so the loop is not written twice.

Each iteration sends only the parameters to the workers and brings back one
:class:`~online_gmm._suffstats.SufficientStatistics` (``K * D * D`` floats at most); the data never
reach the client. Public API:

* :class:`DaskGaussianMixture` -- :class:`~online_gmm.OnlineGaussianMixture` whose ``fit`` runs on
  Dask arrays or dataframes, with ``partial_fit_stream`` (one pass, chunk by chunk, through
  ``partial_fit``) and lazy ``predict`` / ``predict_proba`` / ``score_samples`` on Dask input;
* :func:`refit_on_dask` -- the hook for the pipeline's refit (``refit.dask_scheduler``).

Every function runs on a :class:`distributed.Client` (pass ``client=``, or one set as default) or,
without one, on Dask's threaded scheduler. Install with ``pip install online-gmm[dask]``.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np

try:
    import dask
    import dask.array as da
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "online_gmm.distributed needs Dask and distributed: pip install online-gmm[dask]") from exc

from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state

from online_gmm._batch import fit_em
from online_gmm._em import GaussianParams, Scorer, run_em
from online_gmm._gaussian import get_kernel
from online_gmm._suffstats import SufficientStatistics
from online_gmm.estimator import OnlineGaussianMixture

__all__ = ["DaskGaussianMixture", "refit_on_dask", "make_dask_refit"]

#: rows pulled to the client to initialise from data (``init_params`` on a sample)
DEFAULT_INIT_SIZE = 20_000
#: rows per chunk when a NumPy array is handed to the Dask path
DEFAULT_CHUNK_ROWS = 100_000


# ====================================================================== worker-side functions
class _Partial(NamedTuple):
    """Reduced E-step output: statistics, summed log-likelihood, rows and sample weight."""

    stats: SufficientStatistics
    loglik: float
    n_samples: int
    weight: float


def _as_block(block: Any) -> np.ndarray:
    """A chunk (ndarray or pandas frame) as a finite C-ordered float64 array of shape (n, D)."""
    X = np.ascontiguousarray(np.asarray(block, dtype=np.float64))
    if X.ndim != 2:
        raise ValueError(f"expected 2-D chunks of shape (n_samples, n_features), got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError("Input X contains NaN or infinity (in a chunk of the Dask collection)")
    return X


def _as_weight(weight: Any, n: int) -> np.ndarray | None:
    if weight is None:
        return None
    w = np.asarray(weight, dtype=np.float64).reshape(-1)
    if w.shape != (n,):
        raise ValueError(
            f"sample_weight is not aligned with X: a chunk of {n} rows got {w.shape[0]} weights")
    if not np.isfinite(w).all():
        raise ValueError("sample_weight contains NaN or infinity")
    if np.any(w < 0):
        raise ValueError(f"sample_weight must be >= 0, got a minimum of {w.min()!r}")
    return w


def _block_statistics(block: Any, weight: Any, params: GaussianParams) -> _Partial:
    """Map step: the E-step statistics of one chunk under ``params``."""
    X = _as_block(block)
    w = _as_weight(weight, X.shape[0])
    stats, ll = Scorer(params).expected_statistics(X, w)
    return _Partial(stats, float(ll), X.shape[0], float(X.shape[0] if w is None else w.sum()))


def _merge(*parts: _Partial) -> _Partial:
    """Reduce step: Chan's merge of several partial results, in order."""
    stats = parts[0].stats.copy()
    ll, n, weight = parts[0].loglik, parts[0].n_samples, parts[0].weight
    for p in parts[1:]:
        stats += p.stats
        ll += p.loglik
        n += p.n_samples
        weight += p.weight
    return _Partial(stats, ll, n, weight)


def _score_block(block: Any, params: GaussianParams) -> np.ndarray:
    return Scorer(params).score_samples(_as_block(block))


def _proba_block(block: Any, params: GaussianParams) -> np.ndarray:
    log_resp, _ = Scorer(params).log_resp(_as_block(block))
    return np.exp(log_resp)


def _predict_block(block: Any, params: GaussianParams) -> np.ndarray:
    return Scorer(params).weighted_log_prob(_as_block(block)).argmax(axis=1)


# ====================================================================== client-side helpers
def _is_dask(X: Any) -> bool:
    return dask.is_dask_collection(X)


def _default_client():
    """The default :class:`distributed.Client` if one is set, else None (threaded scheduler)."""
    try:
        from distributed import default_client
        return default_client()
    except (ImportError, ValueError):
        return None


def _compute(obj: Any, client) -> Any:
    """Compute one Dask object on ``client`` (None: the default client, else threads)."""
    if client is not None:
        return dask.compute(obj, scheduler=client)[0]
    return dask.compute(obj)[0]


def _to_dask(X: Any, client, chunk_rows: int | None) -> tuple[da.Array, np.ndarray | None]:
    """A 2-D Dask array with one column chunk, and the feature names of a dataframe (or None).

    A NumPy array is cut into ``chunk_rows``-row chunks and, with a client, persisted on the
    cluster once (so later passes send no data); a dataframe's partitions become row chunks.
    """
    names = None
    if _is_dask(X) and hasattr(X, "to_dask_array"):      # dask DataFrame
        if getattr(X, "ndim", 2) != 2:
            raise ValueError("expected a 2-D collection (a DataFrame, not a Series) for X")
        names = np.asarray([str(c) for c in X.columns], dtype=object)
        if not all(isinstance(c, str) for c in X.columns):
            names = None
        arr = X.to_dask_array()
    elif isinstance(X, da.Array):
        arr = X
    elif _is_dask(X):
        raise TypeError(f"expected a dask Array or DataFrame, got {type(X).__name__}")
    else:
        if hasattr(X, "columns") and all(isinstance(c, str) for c in X.columns):
            names = np.asarray(list(X.columns), dtype=object)
        Xn = np.asarray(X, dtype=np.float64)
        if Xn.ndim != 2:
            raise ValueError(f"expected X of shape (n_samples, n_features), got shape {Xn.shape}")
        arr = da.from_array(Xn, chunks=(chunk_rows or DEFAULT_CHUNK_ROWS, -1))
        if client is not None:
            arr = client.persist(arr)
    if arr.ndim != 2:
        raise ValueError(f"expected X of shape (n_samples, n_features), got {arr.ndim} dimension(s)")
    if np.isnan(arr.shape[1]):
        raise ValueError("the number of features of X is unknown")
    if arr.numblocks[1] > 1:
        arr = arr.rechunk({1: -1})
    return arr, names


def _weight_blocks(sample_weight: Any, X: da.Array, client) -> list:
    """Delayed weight chunks aligned with the row chunks of ``X`` (a list of None if no weights)."""
    nb = X.numblocks[0]
    if sample_weight is None:
        return [None] * nb
    if _is_dask(sample_weight):
        w = sample_weight.to_dask_array() if hasattr(sample_weight, "to_dask_array") else sample_weight
        if w.ndim != 1:
            raise ValueError(f"sample_weight must be 1-D, got {w.ndim} dimensions")
        if not any(np.isnan(c) for c in X.chunks[0]) and w.chunks[0] != X.chunks[0]:
            if w.shape[0] != X.shape[0]:
                raise ValueError(
                    f"sample_weight must have shape ({X.shape[0]},), got ({w.shape[0]},)")
            w = w.rechunk((X.chunks[0],))
    else:
        wn = np.asarray(sample_weight, dtype=np.float64)
        if any(np.isnan(c) for c in X.chunks[0]):
            raise ValueError("NumPy sample_weight needs X with known chunk sizes; pass a Dask array "
                             "aligned with the partitions instead")
        if wn.shape != (X.shape[0],):
            raise ValueError(f"sample_weight must have shape ({X.shape[0]},), got {wn.shape}")
        w = da.from_array(wn, chunks=(X.chunks[0],))
        if client is not None:
            w = client.persist(w)
    if w.numblocks[0] != nb:
        raise ValueError(
            f"sample_weight has {w.numblocks[0]} chunks but X has {nb}: align them by rows")
    return list(w.to_delayed().ravel())


def _tree(parts: list, split_every: int) -> Any:
    """A tree of ordered delayed merges over ``parts``."""
    merge = dask.delayed(_merge, pure=False)
    while len(parts) > 1:
        parts = [merge(*parts[i:i + split_every]) if i + 1 < len(parts) else parts[i]
                 for i in range(0, len(parts), split_every)]
    return parts[0]


def _ship(params: GaussianParams, client) -> Any:
    """The parameters as a graph dependency: broadcast to every worker up front with a client.

    A copy without cached scoring constants is sent. Broadcasting (rather than letting the first
    task on each worker fetch them) means no map task waits for a transfer; while a task waits,
    its worker would run other ready tasks, e.g. generate or load more chunks than it needs.
    """
    if client is not None:
        return client.scatter(params.copy(), broadcast=True, hash=False)
    return dask.delayed(params.copy(), pure=True, traverse=False)


class _EStep:
    """``run_em``'s E-step over Dask chunks; remembers the rows and weight of the last pass."""

    def __init__(self, blocks: list, weights: list, client, split_every: int) -> None:
        self.blocks, self.weights, self.client, self.split_every = blocks, weights, client, split_every
        self.n_samples = 0
        self.weight = 0.0

    def __call__(self, params: GaussianParams) -> tuple[SufficientStatistics, float]:
        p = _ship(params, self.client)
        stat = dask.delayed(_block_statistics, pure=False)
        total = _tree([stat(b, w, p) for b, w in zip(self.blocks, self.weights)], self.split_every)
        part: _Partial = _compute(total, self.client)
        del p                               # releases the broadcast copy on the workers
        self.n_samples, self.weight = part.n_samples, part.weight
        return part.stats, part.loglik


def _sample(blocks: list, weights: list, size: int, rng: np.random.RandomState, client
            ) -> tuple[np.ndarray, np.ndarray | None]:
    """About ``size`` rows pulled to the client from randomly chosen whole chunks."""
    Xs, ws, n = [], [], 0
    for i in rng.permutation(len(blocks)):
        Xb, wb = _compute((blocks[i], weights[i]), client)
        Xb = _as_block(Xb)
        Xs.append(Xb)
        ws.append(_as_weight(wb, Xb.shape[0]))
        n += Xb.shape[0]
        if n >= size:
            break
    X = np.concatenate(Xs)
    w = None if ws[0] is None else np.concatenate(ws)
    if X.shape[0] > size:
        keep = np.sort(rng.choice(X.shape[0], size, replace=False))
        X, w = X[keep], None if w is None else w[keep]
    return X, w


def _start(model: OnlineGaussianMixture, blocks: list, weights: list, d: int, init, init_size: int,
           rng: np.random.RandomState, client) -> tuple[GaussianParams, float]:
    """Starting parameters and lower bound: ``init`` model, warm start, given inits, or a sample."""
    if init is not None:
        init._check_fitted()
        p = init._params_
        if (p.n_features, p.n_components, p.covariance_type) != (d, model.n_components,
                                                                model.covariance_type):
            raise ValueError(
                f"init has {p.n_components} {p.covariance_type!r} components on {p.n_features} "
                f"features; expected {model.n_components} {model.covariance_type!r} on {d}")
        return p, -np.inf
    if model.warm_start and hasattr(model, "converged_") and hasattr(model, "_params_"):
        if model.n_features_in_ != d:
            raise ValueError(f"X has {d} features, but the model was fitted on {model.n_features_in_}")
        return model._params_, model.lower_bound_
    weights_init, means_init, precisions_init = model._inits(d)
    if weights_init is not None and means_init is not None and precisions_init is not None:
        kernel = get_kernel(model.covariance_type)
        return GaussianParams(model.covariance_type, weights_init.copy(), means_init.copy(), None,
                              kernel.precision_cholesky_from_precisions(precisions_init)), -np.inf
    Xs, ws = _sample(blocks, weights, init_size, rng, client)
    if Xs.shape[0] < model.n_components:
        raise ValueError(f"Expected n_samples >= n_components but got n_components = "
                         f"{model.n_components}, n_samples = {Xs.shape[0]}")
    result = fit_em(Xs, n_components=model.n_components, covariance_type=model.covariance_type,
                    init_params=model.init_params, n_init=model.n_init, rng=rng,
                    reg_covar=model.reg_covar, tol=model.tol, max_iter=model.max_iter,
                    sample_weight=ws, weights_init=weights_init, means_init=means_init,
                    precisions_init=precisions_init)
    return result.params, -np.inf


def _fit(model: OnlineGaussianMixture, X: Any, sample_weight: Any = None, *, client=None, init=None,
         init_size: int = DEFAULT_INIT_SIZE, split_every: int = 8,
         chunk_rows: int | None = None) -> OnlineGaussianMixture:
    """Full-batch EM of ``model``, in place, over a Dask collection (see ``DaskGaussianMixture.fit``)."""
    model._validate_params()
    client = client if client is not None else _default_client()
    arr, names = _to_dask(X, client, chunk_rows)
    d = int(arr.shape[1])
    blocks = list(arr.to_delayed().ravel())
    weights = _weight_blocks(sample_weight, arr, client)
    rng = check_random_state(model.random_state)
    start, lb0 = _start(model, blocks, weights, d, init, init_size, rng, client)

    def on_iter(it: int, lb: float, change: float) -> None:
        if model.verbose >= 1 and (it % model.verbose_interval == 0 or model.verbose >= 2):
            print(f"  Dask EM iteration {it}: lower bound {lb:.6f}, change {change:.3e}")

    e_step = _EStep(blocks, weights, client, split_every)
    result = run_em(None, start, reg_covar=model.reg_covar, tol=model.tol, max_iter=model.max_iter,
                    lower_bound=lb0, on_iter=on_iter if model.verbose else None, e_step=e_step)
    stats = result.stats
    if stats is None:          # max_iter == 0: statistics under the starting parameters
        stats, _ = e_step(result.params)
    if e_step.n_samples < max(2, model.n_components):
        raise ValueError(f"Expected n_samples >= n_components but got n_components = "
                         f"{model.n_components}, n_samples = {e_step.n_samples}")
    if e_step.weight <= 0:
        raise ValueError("sample_weight: all weights are zero; their sum must be positive")
    if not result.converged and model.max_iter > 0:
        warnings.warn("Dask EM did not converge. Try different init parameters, or increase "
                      "max_iter, tol, or check for degenerate data.", ConvergenceWarning)
    # install the result exactly as OnlineGaussianMixture.fit does
    model.n_features_in_ = d
    if names is not None:
        model.feature_names_in_ = names
    elif hasattr(model, "feature_names_in_"):
        del model.feature_names_in_
    model._install(stats, result.params, t=e_step.weight, n_seen=e_step.n_samples,
                   weight_seen=e_step.weight, rng=rng, result=result)
    return model


def _iter_chunks(X: Any, sample_weight: Any, client) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """The chunks of ``X`` in order, computed one at a time with the next one prefetched."""
    arr, _ = _to_dask(X, client, None)
    blocks = list(arr.to_delayed().ravel())
    weights = _weight_blocks(sample_weight, arr, client)
    if not blocks:
        return

    def fetch(i: int) -> tuple[Any, Any]:
        return _compute((blocks[i], weights[i]), client)

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(fetch, 0)
        for i in range(len(blocks)):
            Xb, wb = pending.result()
            if i + 1 < len(blocks):
                pending = pool.submit(fetch, i + 1)
            Xb = _as_block(Xb)
            yield Xb, _as_weight(wb, Xb.shape[0])


def _lazy(model: OnlineGaussianMixture, X: Any, func: Callable, kind: str) -> da.Array:
    """``func(chunk, params)`` mapped over the chunks of ``X``: a lazy Dask array."""
    model._check_fitted()
    arr, _ = _to_dask(X, None, None)
    if arr.shape[1] != model.n_features_in_:
        raise ValueError(f"X has {arr.shape[1]} features, but {type(model).__name__} is expecting "
                         f"{model.n_features_in_} features as input")
    params = model._params_
    p = dask.delayed(params.copy(), pure=True, traverse=False)   # lazy: no client bound here
    if kind == "proba":
        return arr.map_blocks(func, p, chunks=(arr.chunks[0], (params.n_components,)),
                              dtype=np.float64, meta=np.empty((0, 0)))
    dtype = np.intp if kind == "label" else np.float64
    return arr.map_blocks(func, p, drop_axis=1, dtype=dtype, meta=np.empty((0,), dtype=dtype))


# ====================================================================== public API
class DaskGaussianMixture(OnlineGaussianMixture):
    """:class:`~online_gmm.OnlineGaussianMixture` fitted over Dask arrays and dataframes.

    Same parameters and fitted attributes as :class:`~online_gmm.OnlineGaussianMixture` (it *is*
    one: ``merge``, ``bic``, checkpointing all apply). ``fit`` runs full-batch EM as a map-reduce of
    sufficient statistics: per iteration, the parameters go to the workers, each chunk's statistics
    are computed where the chunk lives, and a tree of Chan merges brings one set of statistics back.
    From the same starting parameters it reaches the parameters, ``n_iter_`` and ``lower_bound_`` of
    the in-memory ``fit`` (to rounding).

    Initialisation, in this order: the ``init`` argument of :meth:`fit` (a fitted model); the
    previous solution if ``warm_start``; ``weights_init``, ``means_init`` and ``precisions_init`` if
    all three are given; otherwise ``init_params`` with ``n_init`` starts on about ``init_size`` rows
    from randomly chosen whole chunks pulled to the client (EM runs on that sample first, then on all
    the data from the sample's best solution; ``n_init`` therefore applies to the sample).

    ``predict``, ``predict_proba`` and ``score_samples`` return lazy Dask arrays (one task per chunk)
    for Dask input and NumPy arrays for in-memory input.

    Examples
    --------
    Without a :class:`distributed.Client`, Dask's threaded scheduler runs the map-reduce:

    >>> import numpy as np
    >>> import dask.array as da
    >>> from online_gmm.distributed import DaskGaussianMixture
    >>> rng = np.random.RandomState(0)
    >>> X = np.vstack([rng.normal(-5, 1, (500, 2)), rng.normal(5, 1, (500, 2))])
    >>> Xd = da.from_array(X, chunks=(250, 2))
    >>> gm = DaskGaussianMixture(n_components=2, random_state=0).fit(Xd)
    >>> np.round(np.sort(gm.means_[:, 0]))
    array([-5.,  5.])
    >>> labels = gm.predict(Xd)          # lazy, chunk by chunk
    >>> labels.shape, labels.compute().shape
    ((1000,), (1000,))
    """

    def fit(self, X, y=None, sample_weight=None, *, client=None,
            init: OnlineGaussianMixture | None = None, init_size: int = DEFAULT_INIT_SIZE,
            split_every: int = 8) -> "DaskGaussianMixture":
        """Full-batch EM over a Dask collection: one pass over the chunks per iteration.

        Parameters
        ----------
        X : dask.array.Array of shape (n_samples, n_features), dask DataFrame, or array-like
            Row chunks (partitions) are the unit of work; an in-memory array is cut into chunks of
            100 000 rows and, with a client, persisted on the cluster once.
        y : ignored
        sample_weight : dask.array.Array or dask Series of shape (n_samples,), optional
            Aligned with the rows of ``X`` (same row chunks or partitions).
        client : distributed.Client, optional
            Default: the default client if one is set, else Dask's threaded scheduler.
        init : OnlineGaussianMixture, optional
            A fitted model (same ``n_components``, ``covariance_type``, features) to start from.
        init_size : int, default=20000
            Rows sampled to the client for data-based initialisation.
        split_every : int, default=8
            Fan-in of the tree reduction of the statistics.

        Returns
        -------
        self
        """
        return _fit(self, X, sample_weight, client=client, init=init, init_size=init_size,
                    split_every=split_every)

    def fit_predict(self, X, y=None, sample_weight=None, *, client=None):
        """:meth:`fit`, then :meth:`predict` (lazy, shape (n_samples,), for Dask input)."""
        return self.fit(X, sample_weight=sample_weight, client=client).predict(X)

    def partial_fit_stream(self, X, sample_weight=None, *, client=None) -> "DaskGaussianMixture":
        """One online pass: the chunks of ``X``, in order, through :meth:`partial_fit`.

        Each chunk is computed on the cluster (the next one is prefetched while the current one is
        learned) and brought to the client: the client holds two chunks at a time. The result equals
        calling ``partial_fit`` on the same chunks in memory.

        Parameters
        ----------
        X : dask.array.Array of shape (n_samples, n_features), dask DataFrame, or array-like
        sample_weight : dask.array.Array of shape (n_samples,), optional
            Aligned with the row chunks of ``X``.
        client : distributed.Client, optional

        Returns
        -------
        self
        """
        client = client if client is not None else _default_client()
        for Xb, wb in _iter_chunks(X, sample_weight, client):
            self.partial_fit(Xb, sample_weight=wb)
        return self

    def score_samples(self, X):
        """Log-likelihood of each sample, shape (n_samples,): lazy for Dask input."""
        if _is_dask(X):
            return _lazy(self, X, _score_block, "score")
        return super().score_samples(X)

    def predict_proba(self, X):
        """Posterior probabilities, shape (n_samples, n_components): lazy for Dask input."""
        if _is_dask(X):
            return _lazy(self, X, _proba_block, "proba")
        return super().predict_proba(X)

    def predict(self, X):
        """Most probable component of each sample, shape (n_samples,): lazy for Dask input."""
        if _is_dask(X):
            return _lazy(self, X, _predict_block, "label")
        return super().predict(X)

    def score(self, X, y=None) -> float:
        """Mean log-likelihood of ``X`` (computed)."""
        if _is_dask(X):
            return float(self.score_samples(X).mean().compute())
        return super().score(X)


def refit_on_dask(X: Any, scheduler_address: str | None = None, *, sample_weight: Any = None,
                  client=None, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                  init: OnlineGaussianMixture | None = None, init_size: int = DEFAULT_INIT_SIZE,
                  **params: Any) -> OnlineGaussianMixture:
    """Full-batch refit on a Dask cluster: the pipeline's ``refit.dask_scheduler`` hook.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features), dask Array or dask DataFrame
        An in-memory array is cut into ``chunk_rows``-row chunks and sent to the cluster once
        (persisted); Dask collections stay where they are.
    scheduler_address : str, optional
        e.g. ``"tcp://10.0.0.5:8786"``: a :class:`distributed.Client` is opened for the refit and
        closed afterwards (the cluster keeps running). ``None`` with no ``client``: the default
        client if one is set in this process, else Dask's threaded scheduler.
    sample_weight : array-like of shape (n_samples,), optional
    client : distributed.Client, optional
        An existing client (instead of ``scheduler_address``).
    chunk_rows : int, default=100000
    init : OnlineGaussianMixture, optional
        A fitted model to start EM from (e.g. the live model, when refitting the same K).
    init_size : int, default=20000
    **params
        :class:`~online_gmm.OnlineGaussianMixture` parameters (``n_components``,
        ``covariance_type``, ``max_iter``, ...).

    Returns
    -------
    OnlineGaussianMixture
        A fitted model (the plain class, so checkpoints and the pipeline treat it as any other).

    Examples
    --------
    >>> import numpy as np
    >>> from online_gmm.distributed import refit_on_dask
    >>> X = np.random.RandomState(0).normal(size=(400, 2))
    >>> model = refit_on_dask(X, None, chunk_rows=100, n_components=1)
    >>> model.n_samples_seen_, type(model).__name__
    (400, 'OnlineGaussianMixture')
    """
    model = OnlineGaussianMixture(**params)
    if client is not None or scheduler_address is None:
        return _fit(model, X, sample_weight, client=client, init=init, init_size=init_size,
                    chunk_rows=chunk_rows)
    from distributed import Client

    with Client(scheduler_address, set_as_default=False) as own:
        return _fit(model, X, sample_weight, client=own, init=init, init_size=init_size,
                    chunk_rows=chunk_rows)


def make_dask_refit(scheduler_address: str) -> Callable[..., Any]:
    """A drop-in for :func:`online_gmm.refit.refit` that runs each refit on a Dask cluster.

    The pipeline's periodic refits (every candidate K on the reservoir) are CPU work that would stall
    the stream; this sends the reservoir and the online statistics to one worker as a single task and
    brings the :class:`~online_gmm.refit.RefitResult` back. The refit's randomness is a seed drawn
    from the pipeline's generator, so a resumed run makes the same draws. Used by the pipeline when
    the configuration sets ``[refit] dask_scheduler = "tcp://host:8786"``.

    Parameters
    ----------
    scheduler_address : str
        Address of a running ``distributed`` scheduler.
    """
    from online_gmm.refit import refit

    state: dict[str, Any] = {}

    def dask_refit(X, stats, candidates, *, rng=None, **kwargs):
        if "client" not in state:
            from distributed import Client
            state["client"] = Client(scheduler_address, set_as_default=False)
        seed = int(rng) if isinstance(rng, (int, np.integer)) else \
            int(check_random_state(rng).randint(np.iinfo(np.int32).max))
        future = state["client"].submit(refit, np.asarray(X), stats, list(candidates), rng=seed,
                                        pure=False, **kwargs)
        return future.result()

    return dask_refit
