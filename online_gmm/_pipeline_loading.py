"""Reading a pipeline checkpoint back as a model (:func:`load_online`, :func:`load_model`) and the
configuration fingerprint that ties a checkpoint to its job (:func:`fingerprint`); re-exported by
:mod:`online_gmm.pipeline`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from online_gmm.checkpoint import CheckpointStore, unpack
from online_gmm.model_spec import ModelSpec, check_random_state

if TYPE_CHECKING:  # pragma: no cover - the estimator (scikit-learn) is imported where it is used
    from online_gmm.estimator import OnlineGaussianMixture


def load_online(path: str | Any) -> tuple[Any, ModelSpec, dict[str, Any], dict[str, Any]]:
    """The fitted online state of a pipeline checkpoint (file or directory), without scikit-learn.

    Works for one-process and scaled-out jobs' checkpoints alike.

    Returns
    -------
    online : online_gmm._online.OnlineEM
    spec : ModelSpec
        The model's parameters, with ``n_components`` the current K.
    meta : dict
        The checkpoint's metadata (counters, feature names, ...).
    parts : dict
        The checkpoint's parts, ``{name: (arrays, meta)}`` (model, sample, history).

    Raises
    ------
    CheckpointError
        No checkpoint, no model yet, or a model still warming up.
    """
    from pathlib import Path

    from online_gmm.checkpoint import CheckpointError, read_checkpoint
    p = Path(path)
    if p.is_dir():
        loaded = CheckpointStore(p).load_latest()
        if loaded is None:
            raise CheckpointError(f"no checkpoint in {str(p)!r}")
        arrays, meta, _ = loaded
    else:
        arrays, meta = read_checkpoint(p)
    parts = unpack(arrays, meta["parts"])
    if "model" not in parts:
        raise CheckpointError(f"{path}: the checkpoint holds no model yet")
    spec = ModelSpec(**{**meta["model_params"], "n_components": int(meta["n_components"])})
    online = spec._new_online(int(meta["n_features"]), check_random_state(spec.random_state))
    online.n_components = int(meta["n_components"])
    online.load_arrays(*parts["model"])
    if not online.initialised:
        raise CheckpointError(f"{path}: the model is still warming up")
    return online, spec, meta, parts


def load_model(path: str) -> tuple[OnlineGaussianMixture, dict[str, Any], dict[str, Any]]:
    """A fitted :class:`OnlineGaussianMixture` from a pipeline checkpoint (file or directory).

    Returns
    -------
    model : OnlineGaussianMixture
    meta : dict
        The checkpoint's metadata (counters, feature names, ...).
    parts : dict
        The checkpoint's parts, ``{name: (arrays, meta)}`` (model, reservoir, history).
    """
    online, spec, meta, parts = load_online(path)
    return spec.estimator()._adopt(online), meta, parts


def fingerprint(cfg: Mapping[str, Any]) -> str:
    """A short hash of the settings that change what the model's state means.

    A checkpoint written under one fingerprint is refused under another: the model, the fields read,
    the batch size (batch boundaries), the anomaly and refit settings. Where the job stops
    (``max_records``), what the outputs include, and where refits run (``dask_scheduler``) may change
    between runs.
    """
    relevant = {
        "model": cfg.get("model"),
        "fields": cfg.get("source", {}).get("fields") or cfg.get("source", {}).get("columns"),
        "batch_size": cfg.get("pipeline", {}).get("batch_size"),
        "anomaly": cfg.get("anomaly"),
        "refit": {k: v for k, v in cfg.get("refit", {}).items() if k != "dask_scheduler"},
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]
