"""Sufficient statistics of a Gaussian mixture: weight, centred mean and scatter per component.

One class serves every covariance type; only the shape of the scatter differs:

============  ======================  ===============================================
type          ``scatter`` shape        meaning
============  ======================  ===============================================
full          (K, D, D)               sum_i r_ik w_i (x_i - mu_k)(x_i - mu_k)^T
tied          (D, D)                  the same, summed over components
diag          (K, D)                  the diagonal of the full scatter
spherical     (K,)                    its trace
============  ======================  ===============================================

Statistics are never formed from moments about the origin: a block of data is reduced about its own
means (or, within one E-step pass, about the centre every chunk shares, with a guard against
cancellation: :mod:`online_gmm._pass_sums`), and statistics merge by Chan's formula, so ``a + b`` is
exact (the statistics of two halves merged equal the statistics of the whole to rounding) and data
offset by 1e8 keeps its digits.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from online_gmm._gaussian import get_kernel

__all__ = ["SufficientStatistics"]

_FORMAT = 1


class SufficientStatistics:
    """Per-component weight, centred mean and scatter of responsibility-weighted data.

    Parameters
    ----------
    covariance_type : {'full', 'tied', 'diag', 'spherical'}
    weights : ndarray of shape (n_components,)
        Sum of responsibility times sample weight, per component.
    means : ndarray of shape (n_components, n_features)
        Weighted mean per component (arbitrary where the weight is zero).
    scatter : ndarray
        Centred scatter, shape as in the module docstring.

    Examples
    --------
    >>> import numpy as np
    >>> from online_gmm._suffstats import SufficientStatistics
    >>> X = np.arange(12.0).reshape(6, 2)
    >>> resp = np.ones((6, 1))
    >>> whole = SufficientStatistics.from_resp(X, resp, covariance_type="full")
    >>> halves = (SufficientStatistics.from_resp(X[:3], resp[:3], covariance_type="full")
    ...           + SufficientStatistics.from_resp(X[3:], resp[3:], covariance_type="full"))
    >>> bool(np.allclose(whole.scatter, halves.scatter, rtol=1e-12))
    True
    >>> whole.weights
    array([6.])
    """

    __slots__ = ("covariance_type", "weights", "means", "scatter")

    def __init__(self, covariance_type: str, weights: np.ndarray, means: np.ndarray,
                 scatter: np.ndarray) -> None:
        kernel = get_kernel(covariance_type)
        weights = np.asarray(weights, dtype=np.float64)
        means = np.asarray(means, dtype=np.float64)
        scatter = np.asarray(scatter, dtype=np.float64)
        k_comp, d = means.shape
        if weights.shape != (k_comp,) or scatter.shape != kernel.scatter_shape(k_comp, d):
            raise ValueError(
                f"inconsistent shapes for covariance_type={covariance_type!r}: weights "
                f"{weights.shape}, means {means.shape}, scatter {scatter.shape} (expected "
                f"{(k_comp,)}, (K, D), {kernel.scatter_shape(k_comp, d)})"
            )
        self.covariance_type = covariance_type
        self.weights = weights
        self.means = means
        self.scatter = scatter

    # ------------------------------------------------------------------ construction
    @classmethod
    def zeros(cls, n_components: int, n_features: int, covariance_type: str) -> "SufficientStatistics":
        """Empty statistics (zero weight) of the given shape."""
        kernel = get_kernel(covariance_type)
        return cls(covariance_type, np.zeros(n_components), np.zeros((n_components, n_features)),
                   np.zeros(kernel.scatter_shape(n_components, n_features)))

    @classmethod
    def from_resp(cls, X: np.ndarray, resp: np.ndarray, sample_weight: np.ndarray | None = None,
                  *, covariance_type: str, buf: np.ndarray | None = None,
                  centre: np.ndarray | None = None, squares: np.ndarray | None = None
                  ) -> "SufficientStatistics":
        """Statistics of one block of data given its responsibilities.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
        resp : ndarray of shape (n_samples, n_components)
            Responsibilities (rows sum to one in EM; any non-negative weights are allowed).
        sample_weight : ndarray of shape (n_samples,), optional
        covariance_type : str
        buf : ndarray of shape (>= n_samples, n_features), optional
            Scratch space reused across calls.
        centre : ndarray of shape (n_features,), optional
            When given, ``X`` is already centred: the data are ``X + centre``. The
            :class:`~online_gmm._em.Scorer` passes the chunk its kernel centred for the E-step.
        squares : ndarray, optional
            With ``centre``: the kernel's squares of ``X`` for diag, shape (n_samples, n_features),
            or the squared row norms for spherical, shape (n_samples,).
        """
        kernel = get_kernel(covariance_type)
        # float64 whatever the data's dtype: float32 sums over many rows would keep few digits
        X = np.asarray(X, dtype=np.float64)
        if sample_weight is not None:
            resp = resp * sample_weight[:, None]
        nk = resp.sum(axis=0)
        safe = np.where(nk > 0, nk, 1.0)
        # Work on data shifted by the block's column mean (or by the kernel's centre, the mean of
        # the component means, when the Scorer passes its centred chunk): sums of small numbers
        # keep their digits (at an offset of 1e8 an unshifted mean would already be off by
        # ~1e-7), and the scatter is invariant to the shift.
        if centre is None:
            c = X.mean(axis=0)
            z = X - c
            squares = None
        else:
            c, z = centre, X
        delta = (resp.T @ z) / safe[:, None]
        delta[nk <= 0] = 0.0
        scatter = kernel.chunk_scatter(z, resp, nk, delta, buf, squares)
        means = delta + c
        return cls(covariance_type, nk, means, scatter)

    # ------------------------------------------------------------------ algebra
    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def n_features(self) -> int:
        return self.means.shape[1]

    @property
    def total_weight(self) -> float:
        """Sum of the component weights (the effective number of samples)."""
        return float(self.weights.sum())

    def copy(self) -> "SufficientStatistics":
        return SufficientStatistics(self.covariance_type, self.weights.copy(), self.means.copy(),
                                    self.scatter.copy())

    def _check_compatible(self, other: "SufficientStatistics") -> None:
        if not isinstance(other, SufficientStatistics):
            raise TypeError(f"cannot merge SufficientStatistics with {type(other).__name__}")
        if other.covariance_type != self.covariance_type or other.means.shape != self.means.shape:
            raise ValueError(
                "cannot merge statistics of different models: "
                f"{self.covariance_type!r} {self.means.shape} vs "
                f"{other.covariance_type!r} {other.means.shape}"
            )

    def __iadd__(self, other: "SufficientStatistics") -> "SufficientStatistics":
        """Chan's merge, in place: the statistics of the union of both data sets."""
        self._check_compatible(other)
        wa, wb = self.weights, other.weights
        w = wa + wb
        delta = other.means - self.means
        frac = np.divide(wb, w, out=np.zeros_like(w), where=w > 0)
        term = get_kernel(self.covariance_type).chan_term(wa, wb, w, delta)
        self.scatter += other.scatter
        self.scatter += term
        self.means += frac[:, None] * delta
        self.weights = w
        return self

    @staticmethod
    def accumulate(total: "SufficientStatistics | None", part: "SufficientStatistics"
                   ) -> "SufficientStatistics":
        """``total += part`` (Chan's merge, in place), or ``part`` itself when ``total`` is None:
        the running sum of a loop over chunks."""
        if total is None:
            return part
        total += part
        return total

    def __add__(self, other: "SufficientStatistics") -> "SufficientStatistics":
        out = self.copy()
        out += other
        return out

    def scale(self, factor: float) -> "SufficientStatistics":
        """Statistics with every sample's weight multiplied by ``factor`` (forgetting when < 1)."""
        if not (np.isfinite(factor) and factor >= 0):
            raise ValueError(f"scale factor must be finite and >= 0, got {factor!r}")
        return SufficientStatistics(self.covariance_type, self.weights * factor, self.means.copy(),
                                    self.scatter * factor)

    def decay(self, factor: float) -> None:
        """In-place :meth:`scale`."""
        if not (np.isfinite(factor) and factor >= 0):
            raise ValueError(f"decay factor must be finite and >= 0, got {factor!r}")
        self.weights *= factor
        self.scatter *= factor

    # ------------------------------------------------------------------ M-step
    def covariances(self, reg_covar: float) -> np.ndarray:
        """Covariances (shape as scikit-learn's ``covariances_``) with ``reg_covar`` on the diagonal."""
        return get_kernel(self.covariance_type).covariances(
            self.scatter, self.weights, reg_covar, self.n_features)

    def to_params(self, reg_covar: float):
        """The M-step: mixture parameters maximising the expected log-likelihood.

        Returns
        -------
        GaussianParams
        """
        from online_gmm._em import GaussianParams

        nk = self.weights + 10 * np.finfo(float).eps
        weights = nk / nk.sum()
        cov = self.covariances(reg_covar)
        kernel = get_kernel(self.covariance_type)
        return GaussianParams(self.covariance_type, weights, self.means.copy(), cov,
                              kernel.precision_cholesky(cov))

    def is_finite(self) -> bool:
        return bool(np.isfinite(self.weights).all() and np.isfinite(self.means).all()
                    and np.isfinite(self.scatter).all())

    # ------------------------------------------------------------------ serialisation
    def to_arrays(self, prefix: str = "") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Exact serialisation: plain float64 arrays plus JSON-able metadata.

        Returns
        -------
        arrays : dict of str to ndarray
        meta : dict
        """
        arrays = {f"{prefix}weights": self.weights.copy(), f"{prefix}means": self.means.copy(),
                  f"{prefix}scatter": self.scatter.copy()}
        meta = {"format": _FORMAT, "covariance_type": self.covariance_type,
                "n_components": self.n_components, "n_features": self.n_features}
        return arrays, meta

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any],
                    prefix: str = "") -> "SufficientStatistics":
        """Inverse of :meth:`to_arrays`; validates shapes and finiteness."""
        if meta.get("format") != _FORMAT:
            raise ValueError(f"unsupported statistics format {meta.get('format')!r}, expected {_FORMAT}")
        stats = cls(meta["covariance_type"], arrays[f"{prefix}weights"], arrays[f"{prefix}means"],
                    arrays[f"{prefix}scatter"])
        if stats.n_components != meta["n_components"] or stats.n_features != meta["n_features"]:
            raise ValueError("statistics arrays do not match their metadata")
        if not stats.is_finite():
            raise ValueError("statistics contain NaN or infinity")
        return stats

    def to_json(self) -> str:
        """A JSON string (floats written with repr precision: exact round trip)."""
        arrays, meta = self.to_arrays()
        return json.dumps({"meta": meta, **{k: v.tolist() for k, v in arrays.items()}})

    @classmethod
    def from_json(cls, text: str) -> "SufficientStatistics":
        obj = json.loads(text)
        return cls.from_arrays({k: np.asarray(obj[k], dtype=np.float64)
                                for k in ("weights", "means", "scatter")}, obj["meta"])

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, SufficientStatistics)
                and self.covariance_type == other.covariance_type
                and np.array_equal(self.weights, other.weights)
                and np.array_equal(self.means, other.means)
                and np.array_equal(self.scatter, other.scatter))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"SufficientStatistics(covariance_type={self.covariance_type!r}, "
                f"n_components={self.n_components}, n_features={self.n_features}, "
                f"total_weight={self.total_weight:.6g})")
