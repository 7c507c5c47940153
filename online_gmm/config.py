"""Pipeline configuration: a TOML file read into plain dicts, checked key by key.

Every section and key is declared below with its default; an unknown key is an error that names it
(a typo must never be silently ignored). ``model`` takes any :class:`OnlineGaussianMixture` parameter.

Example ``pipeline.toml``::

    [source]
    type = "jsonl"                       # jsonl | csv | parquet | kafka
    path = "events/*.jsonl.gz"
    fields = ["metrics.latency_ms", "metrics.cpu"]

    [model]
    n_components = 3
    covariance_type = "full"
    halflife = 20000

    [pipeline]
    batch_size = 500

    [anomaly]
    quantile = 0.99                      # flag the top 1% of -log p
    policy = "adapt"                     # or "protect"

    [refit]
    every = 5000
    candidates = [2, 3, 4, 5]

    [checkpoint]
    directory = "state"
    every = 5000

    [sinks.scores]
    type = "jsonl"
    path = "out/scores.jsonl"
"""

from __future__ import annotations

import copy
import inspect
import sys
from pathlib import Path
from typing import Any, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["ConfigError", "load_config", "parse_config", "DEFAULTS", "build_source", "build_sink"]


class ConfigError(ValueError):
    """The configuration is invalid; the message names the offending section and key."""


_SOURCE_KEYS = {
    "type": None, "path": None, "fields": None, "columns": None, "header": True, "delimiter": ",",
    "missing": "reject", "follow": False, "name": None, "timeout": 1.0, "carry": None,
    # kafka
    "topics": None, "bootstrap_servers": None, "group_id": None, "max_idle_s": None, "settings": {},
}
_SINK_KEYS = {"type": None, "path": None, "fields": None, "topic": None, "bootstrap_servers": None,
              "key": None, "settings": {},
              "row_group_size": 65536}  # parquet: rows per row group

DEFAULTS: dict[str, Any] = {
    "source": _SOURCE_KEYS,
    "model": {"n_components": 3},
    "pipeline": {"batch_size": 500, "max_records": None, "responsibilities": False, "features": True},
    "anomaly": {"threshold": None, "quantile": 0.99, "policy": "adapt", "min_samples": 200},
    "refit": {"every": 0, "reservoir_size": 5000, "mode": "reservoir", "candidates": None,
              "criterion": "bic", "n_init": 2, "max_iter": 100, "seed": 0, "dask_scheduler": None},
    "checkpoint": {"directory": None, "every": 5000, "keep": 3},
    "sinks": {},
}
_SINK_NAMES = ("scores", "anomalies", "dead_letters")


def _model_keys() -> set[str]:
    from online_gmm.estimator import OnlineGaussianMixture
    return set(inspect.signature(OnlineGaussianMixture.__init__).parameters) - {"self"}


def _check_keys(section: str, given: Mapping[str, Any], allowed) -> None:
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown key(s) in [{section}]: {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(sorted(allowed))}")


def parse_config(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a configuration mapping and fill in defaults.

    Raises
    ------
    ConfigError
        Naming the section and key that is unknown or invalid.

    Examples
    --------
    >>> cfg = parse_config({"source": {"type": "jsonl", "path": "x.jsonl", "fields": ["a"]}})
    >>> cfg["pipeline"]["batch_size"], cfg["anomaly"]["policy"]
    (500, 'adapt')
    >>> parse_config({"source": {"type": "jsonl", "path": "x", "fields": ["a"], "feilds": 1}})
    Traceback (most recent call last):
    ...
    online_gmm.config.ConfigError: unknown key(s) in [source]: 'feilds'; allowed: ...
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"the configuration must be a table, got {type(raw).__name__}")
    _check_keys("top level", raw, DEFAULTS)
    cfg: dict[str, Any] = {}
    for section, defaults in DEFAULTS.items():
        given = raw.get(section, {})
        if not isinstance(given, Mapping):
            raise ConfigError(f"[{section}] must be a table, got {given!r}")
        if section == "model":
            _check_keys("model", given, _model_keys())
            cfg["model"] = {**defaults, **given}
        elif section == "sinks":
            _check_keys("sinks", given, _SINK_NAMES)
            cfg["sinks"] = {}
            for name, sink in given.items():
                if not isinstance(sink, Mapping):
                    raise ConfigError(f"[sinks.{name}] must be a table, got {sink!r}")
                _check_keys(f"sinks.{name}", sink, _SINK_KEYS)
                cfg["sinks"][name] = {**copy.deepcopy(_SINK_KEYS), **sink}
                if cfg["sinks"][name]["type"] not in ("jsonl", "csv", "parquet", "kafka"):
                    raise ConfigError(f"[sinks.{name}] type must be 'jsonl', 'csv', 'parquet' or 'kafka', "
                                      f"got {sink.get('type')!r}")
                rgs = cfg["sinks"][name]["row_group_size"]
                if not isinstance(rgs, int) or isinstance(rgs, bool) or rgs < 1:
                    raise ConfigError(f"[sinks.{name}] row_group_size must be an integer >= 1, got {rgs!r}")
        else:
            _check_keys(section, given, defaults)
            cfg[section] = {**copy.deepcopy(defaults), **given}
    src = cfg["source"]
    if src["type"] not in ("jsonl", "csv", "parquet", "kafka"):
        raise ConfigError(f"[source] type must be one of 'jsonl', 'csv', 'parquet', 'kafka'; got {src['type']!r}")
    if src["type"] == "kafka":
        for key in ("topics", "bootstrap_servers", "fields"):
            if not src[key]:
                raise ConfigError(f"[source] type 'kafka' needs {key!r}")
    elif not src["path"]:
        raise ConfigError(f"[source] type {src['type']!r} needs 'path'")
    bs = cfg["pipeline"]["batch_size"]
    if not isinstance(bs, int) or isinstance(bs, bool) or bs < 1:
        raise ConfigError(f"[pipeline] batch_size must be an integer >= 1, got {bs!r}")
    an = cfg["anomaly"]
    if an["policy"] not in ("adapt", "protect"):
        raise ConfigError(f"[anomaly] policy must be 'adapt' or 'protect', got {an['policy']!r}")
    if an["threshold"] is None and not (0.0 < float(an["quantile"]) < 1.0):
        raise ConfigError(f"[anomaly] quantile must be in (0, 1), got {an['quantile']!r}")
    rf = cfg["refit"]
    if rf["mode"] not in ("reservoir", "window"):
        raise ConfigError(f"[refit] mode must be 'reservoir' or 'window', got {rf['mode']!r}")
    if rf["criterion"] not in ("bic", "aic"):
        raise ConfigError(f"[refit] criterion must be 'bic' or 'aic', got {rf['criterion']!r}")
    return cfg


def load_config(path: str | Path) -> dict[str, Any]:
    """Read and validate a TOML configuration file; relative paths are resolved against its folder."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {str(path)!r}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    cfg = parse_config(raw)
    base = path.resolve().parent
    for table in [cfg["source"], cfg["checkpoint"], *cfg["sinks"].values()]:
        for key in ("path", "directory"):
            if table.get(key) and not Path(table[key]).is_absolute() and "://" not in str(table[key]):
                table[key] = str(base / table[key])
    return cfg


# ------------------------------------------------------------------------------------------ factories
def build_source(cfg: Mapping[str, Any]):
    """A :class:`connectors.base.Source` from a validated ``[source]`` table."""
    kind = cfg["type"]
    if kind == "jsonl":
        from connectors.files import JSONLinesSource
        return JSONLinesSource(cfg["path"], fields=cfg["fields"], missing=cfg["missing"],
                               follow=cfg["follow"], name=cfg["name"], timeout=cfg["timeout"])
    if kind == "csv":
        from connectors.files import CSVSource
        return CSVSource(cfg["path"], columns=cfg["columns"] or cfg["fields"], header=cfg["header"],
                         delimiter=cfg["delimiter"], missing=cfg["missing"], follow=cfg["follow"],
                         name=cfg["name"], timeout=cfg["timeout"])
    if kind == "parquet":
        from connectors.files import ParquetSource
        return ParquetSource(cfg["path"], columns=cfg["columns"] or cfg["fields"], missing=cfg["missing"],
                             name=cfg["name"], carry=cfg["carry"] or ())
    from connectors.decoders import JSONDecoder
    from connectors.kafka import KafkaSource
    return KafkaSource(cfg["topics"], cfg["bootstrap_servers"], cfg["group_id"],
                       JSONDecoder(cfg["fields"], missing=cfg["missing"]), name=cfg["name"],
                       max_idle_s=cfg["max_idle_s"], **dict(cfg["settings"]))


def build_sink(cfg: Mapping[str, Any]):
    """A :class:`connectors.base.Sink` from a validated ``[sinks.*]`` table."""
    kind = cfg["type"]
    if kind == "jsonl":
        from connectors.files import JSONLinesSink
        Path(cfg["path"]).parent.mkdir(parents=True, exist_ok=True)
        return JSONLinesSink(cfg["path"])
    if kind == "csv":
        from connectors.files import CSVSink
        if not cfg["fields"]:
            raise ConfigError("a csv sink needs 'fields' (the output columns)")
        Path(cfg["path"]).parent.mkdir(parents=True, exist_ok=True)
        return CSVSink(cfg["path"], cfg["fields"])
    if kind == "parquet":
        from connectors.parquet import ParquetSink
        return ParquetSink(cfg["path"], row_group_size=cfg["row_group_size"])  # path: a directory
    from connectors.kafka import KafkaSink
    if not cfg["topic"] or not cfg["bootstrap_servers"]:
        raise ConfigError("a kafka sink needs 'topic' and 'bootstrap_servers'")
    return KafkaSink(cfg["topic"], cfg["bootstrap_servers"], key=cfg["key"], **dict(cfg["settings"]))
