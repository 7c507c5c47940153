"""The E-step on the data's device under array API dispatch (:mod:`online_gmm._xp_scorer`).

On ``array_api_strict`` and on PyTorch CPU tensors: ``fit``, ``partial_fit`` after the warm-up and
inference agree with the NumPy path (float64 to rounding; float32, computed in float32 on the
device while the NumPy kernels compute in float64, to about 1e-4), their outputs are in the input's
namespace and on its device, and the data never come to the host on the way: with every route to
the host closed (scikit-learn's ``move_to`` to NumPy, ``__array__``, the host ``Scorer``), the
calls still succeed.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import sklearn
from sklearn.utils._array_api import device as device_of
from sklearn.utils._array_api import get_namespace, move_to

from online_gmm import OnlineGaussianMixture

TYPES = ("full", "tied", "diag", "spherical")
N = 240


def _space(name: str):
    """(xp, device) of a test, or skip saying why."""
    if name == "array_api_strict":
        xp = pytest.importorskip("array_api_strict", reason="array-api-strict (the test extra) is "
                                                            "not installed")
        return xp, xp.Device("CPU_DEVICE")
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (CI does not install it): "
                                                "the PyTorch CPU device tests do not run")
    return torch, torch.device("cpu")


@pytest.fixture(params=["array_api_strict", "torch"])
def space(request):
    return _space(request.param)


@pytest.fixture(autouse=True)
def dispatch_env(monkeypatch):
    # scikit-learn turns array API dispatch on only with it set
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")


def _data(dtype=np.float64, seed=0) -> np.ndarray:
    rng = np.random.RandomState(seed)
    centres = np.array([[-4.0, 0.0, 1.0], [0.0, 4.0, -1.0], [5.0, -3.0, 0.0]])
    X = np.vstack([rng.normal(c, 1.0, (N // 3, 3)) for c in centres]) + 100.0   # offset: centring
    return rng.permutation(X).astype(dtype)


def _host(a) -> np.ndarray:
    return move_to(a, xp=np, device="cpu")


def _tols(dtype) -> tuple[float, float]:
    return (1e-10, 1e-12) if dtype == np.float64 else (2e-4, 2e-5)


class HostCopy(AssertionError):
    """The data (or an (n, K) array) were about to come to the host."""


@pytest.fixture
def no_host_copies(monkeypatch):
    """:func:`close_host_routes` for the whole test; returns the function that reopens them."""
    return close_host_routes(monkeypatch)


def close_host_routes(monkeypatch):
    """Close every route of an array with ``N // 4`` rows or more (the data, its (n, K) arrays) to
    the host: scikit-learn's ``move_to`` to NumPy, ``np.asarray`` (``__array__``), ``Tensor.numpy``,
    and the host Scorer's evaluations. Returns a function that opens them again."""
    import sklearn.utils._array_api as sk_api

    from online_gmm._em import Scorer

    state = {"on": True}

    def big(a) -> bool:
        shape = getattr(a, "shape", ())
        return state["on"] and len(shape) >= 1 and shape[0] >= N // 4

    real_move_to = sk_api.move_to

    def move_to_guarded(*arrays, xp, device):
        if xp is np and any(big(a) for a in arrays if not isinstance(a, np.ndarray)):
            raise HostCopy("move_to(NumPy) of the data")
        return real_move_to(*arrays, xp=xp, device=device)

    monkeypatch.setattr(sk_api, "move_to", move_to_guarded)
    for name in ("expected_statistics", "weighted_log_prob", "log_resp", "score_samples", "predict",
                 "score_statistics"):
        real = getattr(Scorer, name)

        def guarded(self, X, *args, _real=real, _name=name, **kwargs):
            if state["on"]:
                raise HostCopy(f"host Scorer.{_name}")
            return _real(self, X, *args, **kwargs)
        monkeypatch.setattr(Scorer, name, guarded)

    def no_array(real):
        def __array__(self, *args, **kwargs):
            if big(self):
                raise HostCopy("__array__ of the data")
            return real(self, *args, **kwargs)
        return __array__

    try:
        import array_api_strict
        cls = type(array_api_strict.asarray([0.0]))
        monkeypatch.setattr(cls, "__array__", no_array(cls.__array__))
    except ImportError:
        pass
    try:
        import torch
        monkeypatch.setattr(torch.Tensor, "__array__", no_array(torch.Tensor.__array__))
        real_numpy = torch.Tensor.numpy

        def numpy(self, *args, **kwargs):
            if big(self):
                raise HostCopy("Tensor.numpy of the data")
            return real_numpy(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, "numpy", numpy)
    except ImportError:
        pass

    def reopen():
        state["on"] = False
    return reopen


# ------------------------------------------------------------------------------ (a), (b) fit
@pytest.mark.parametrize("ctype", TYPES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fit_and_inference_agree_with_numpy(space, ctype, dtype):
    xp, dev = space
    X = _data(dtype)
    # float32: the same number of iterations (a tol test near its threshold may stop one apart)
    kw = dict(covariance_type=ctype, init_params="random", random_state=0, max_iter=12,
              **({"tol": 0.0} if dtype == np.float32 else {}))
    rtol, atol = _tols(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = OnlineGaussianMixture(3, **kw).fit(X)
        X_xp = xp.asarray(X, device=dev)
        with sklearn.config_context(array_api_dispatch=True):
            model = OnlineGaussianMixture(3, **kw).fit(X_xp)
            out = {"predict": model.predict(X_xp), "predict_proba": model.predict_proba(X_xp),
                   "score_samples": model.score_samples(X_xp), "means_": model.means_,
                   "covariances_": model.covariances_, "weights_": model.weights_}
            score, bic = model.score(X_xp), model.bic(X_xp)
    assert model.n_iter_ == ref.n_iter_
    for name, value in out.items():
        assert get_namespace(value)[0] is get_namespace(X_xp)[0], name
        assert device_of(value) == device_of(X_xp), name
        expected = getattr(ref, name) if name.endswith("_") else getattr(ref, name)(X)
        if name == "predict":
            np.testing.assert_array_equal(_host(value), expected)
        else:
            assert _host(value).dtype == dtype, name
            np.testing.assert_allclose(_host(value), expected, rtol=rtol, atol=atol, err_msg=name)
    np.testing.assert_allclose(model._params_.covariance_matrices(),
                               ref._params_.covariance_matrices(), rtol=10 * rtol, atol=atol)
    assert isinstance(score, float) and score == pytest.approx(ref.score(X), rel=rtol)
    assert bic == pytest.approx(ref.bic(X), rel=rtol)


@pytest.mark.parametrize("ctype", ["full", "diag"])
def test_weighted_fit_and_fit_predict_agree_with_numpy(space, ctype):
    xp, dev = space
    X = _data()
    w = np.random.RandomState(1).uniform(0.2, 3.0, N)
    kw = dict(covariance_type=ctype, init_params="random_from_data", random_state=0, n_init=2)
    ref = OnlineGaussianMixture(3, **kw).fit(X, sample_weight=w)
    X_xp = xp.asarray(X, device=dev)
    with sklearn.config_context(array_api_dispatch=True):
        model = OnlineGaussianMixture(3, **kw)
        labels = model.fit_predict(X_xp, sample_weight=w)
    np.testing.assert_allclose(model._params_.means, ref._params_.means, rtol=1e-10)
    np.testing.assert_allclose(model.stats_.scatter, ref.stats_.scatter, rtol=1e-9)
    assert model.lower_bound_ == pytest.approx(ref.lower_bound_, rel=1e-12)
    assert get_namespace(labels)[0] is get_namespace(X_xp)[0]
    np.testing.assert_array_equal(_host(labels), ref.predict(X))


# ------------------------------------------------------------------------------ (c), (d) on device
@pytest.mark.parametrize("ctype", ["full", "tied", "spherical"])
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_fit_and_inference_never_bring_the_data_to_the_host(space, ctype, no_host_copies):
    xp, dev = space
    X_xp = xp.asarray(_data(np.float32), device=dev)
    with sklearn.config_context(array_api_dispatch=True):
        model = OnlineGaussianMixture(3, covariance_type=ctype, init_params="random_from_data",
                                      random_state=0, max_iter=5).fit(X_xp)
        labels = model.predict(X_xp)
        proba = model.predict_proba(X_xp)
        log_p = model.score_samples(X_xp)
        model.score(X_xp), model.aic(X_xp)
    for value in (labels, proba, log_p):
        assert get_namespace(value)[0] is get_namespace(X_xp)[0]
        assert device_of(value) == device_of(X_xp)
    no_host_copies()                     # the guard itself works: the host route is caught
    model_np = OnlineGaussianMixture(3, covariance_type=ctype, init_params="random_from_data",
                                     random_state=0, max_iter=5).fit(_data(np.float32))
    np.testing.assert_array_equal(_host(labels), model_np.predict(_data(np.float32)))


def test_the_guard_catches_the_host_route(space, no_host_copies):
    xp, dev = space
    X_xp = xp.asarray(_data(), device=dev)
    with pytest.raises(HostCopy):        # dispatch off: the tensor comes to the host
        OnlineGaussianMixture(3, init_params="random_from_data", random_state=0).fit(X_xp)


@pytest.mark.parametrize("ctype", ["full", "diag"])
def test_partial_fit_after_the_warm_up_stays_on_the_device(space, ctype, monkeypatch):
    xp, dev = space
    X = np.vstack([_data(seed=s) for s in range(3)])          # 3 * N rows, batches of N // 2
    kw = dict(covariance_type=ctype, init_params="random_from_data", random_state=0, warm_up=N)
    ref = OnlineGaussianMixture(3, **kw)
    model = OnlineGaussianMixture(3, **kw)
    batches = [X[a:a + N // 2] for a in range(0, X.shape[0], N // 2)]
    for b in batches:
        ref.partial_fit(b)
    with sklearn.config_context(array_api_dispatch=True):
        for b in batches[:2]:                  # the warm-up buffer is on the host, as documented
            model.partial_fit(xp.asarray(b, device=dev))
        assert model._online.initialised
        reopen = close_host_routes(monkeypatch)
        for b in batches[2:]:                  # the updates: E-step on the device
            b_xp = xp.asarray(b, device=dev)
            model.partial_fit(b_xp)
            assert get_namespace(model.predict(b_xp))[0] is get_namespace(b_xp)[0]
        reopen()
    np.testing.assert_allclose(model._params_.means, ref._params_.means, rtol=1e-10)
    np.testing.assert_allclose(model.stats_.scatter, ref.stats_.scatter, rtol=1e-9)
    assert model.n_samples_seen_ == ref.n_samples_seen_ == X.shape[0]
    assert model._online.n_updates == ref._online.n_updates
    assert get_namespace(model.means_)[0] is get_namespace(xp.asarray(X[:2], device=dev))[0]
    assert device_of(model.means_) == device_of(xp.asarray(X[:2], device=dev))


# ------------------------------------------------------------------------------ (e) bad input
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_nan_and_extreme_values_raise(space, no_host_copies):
    xp, dev = space
    X = _data()
    X_nan = X.copy()
    X_nan[5, 1] = np.nan
    with sklearn.config_context(array_api_dispatch=True):
        with pytest.raises(ValueError, match="Input X contains NaN"):
            OnlineGaussianMixture(3, init_params="random").fit(xp.asarray(X_nan, device=dev))
        model = OnlineGaussianMixture(3, init_params="random", warm_up=N // 2, max_iter=5,
                                      random_state=0).fit(xp.asarray(X, device=dev))
        for method in ("predict", "score_samples", "partial_fit"):
            with pytest.raises(ValueError, match="Input X contains NaN"):
                getattr(model, method)(xp.asarray(X_nan, device=dev))
    no_host_copies()                     # the message naming the row is made on the host
    X_big = X.copy()
    X_big[7, 0] = 1e200
    with sklearn.config_context(array_api_dispatch=True):
        with pytest.raises(ValueError, match=r"rows \[7\] of X"):
            OnlineGaussianMixture(3, init_params="random").fit(xp.asarray(X_big, device=dev))


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_overflowing_rows_are_scored_as_numpy_scores_them(space):
    # a row whose log-density overflows the device's arithmetic: the call falls back to the host
    # Scorer (its repair rule), so there is no NaN and the answers are NumPy's
    xp, dev = space
    X = _data()
    kw = dict(init_params="random_from_data", random_state=0, max_iter=5)
    ref = OnlineGaussianMixture(3, **kw).fit(X)
    far = X[:4].copy()
    far[0, 0] = 1e160
    far[1, :] = -1e155
    with sklearn.config_context(array_api_dispatch=True):
        model = OnlineGaussianMixture(3, **kw).fit(xp.asarray(X, device=dev))
        far_xp = xp.asarray(far, device=dev)
        log_p, labels = model.score_samples(far_xp), model.predict(far_xp)
        proba = model.predict_proba(far_xp)
    np.testing.assert_allclose(_host(log_p), ref.score_samples(far), rtol=1e-10)
    np.testing.assert_array_equal(_host(labels), ref.predict(far))
    np.testing.assert_allclose(_host(proba), ref.predict_proba(far), atol=1e-12)
    assert device_of(log_p) == device_of(far_xp)
