"""Pipeline configuration: a TOML file read into plain dicts, checked key by key.

Every section and key is declared below with its default; an unknown key is an error that names it
(a typo must never be silently ignored), and every key's type and range is checked when the file is
loaded (:data:`SPECS`; ``follow = "false"`` is an error, not a true string), with a message naming the
section and key. ``model`` takes any :class:`OnlineGaussianMixture` parameter, checked by the
estimator's own constraints (:data:`online_gmm.model_spec.PARAMETERS`, without scikit-learn). Relative paths are resolved against the configuration file's folder.

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

    [metrics]
    port = 9108                          # Prometheus metrics on http://127.0.0.1:9108/metrics

    [sinks.scores]
    type = "jsonl"
    path = "out/scores.jsonl"
"""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["ConfigError", "load_config", "parse_config", "DEFAULTS", "SPECS", "build_source",
           "build_sink"]


class ConfigError(ValueError):
    """The configuration is invalid; the message names the offending section and key."""


_SOURCE_KEYS = {
    "type": None, "path": None, "fields": None, "columns": None, "header": True, "delimiter": ",",
    "missing": "reject", "follow": False, "name": None, "timeout": 1.0, "carry": None,
    # kafka
    "topics": None, "bootstrap_servers": None, "group_id": None, "max_idle_s": None, "settings": {},
    "client": None,  # "confluent" | "kafka-python"; None: confluent-kafka when installed
    "partitions": None,  # without group_id: only these partitions
}
_SINK_KEYS = {"type": None, "path": None, "fields": None, "topic": None, "bootstrap_servers": None,
              "key": None, "settings": {}, "client": None,
              "row_group_size": 65536}  # parquet: rows per row group

DEFAULTS: dict[str, Any] = {
    "source": _SOURCE_KEYS,
    "model": {"n_components": 3},
    "pipeline": {"batch_size": 5000, "max_records": None, "responsibilities": False, "features": True},
    "anomaly": {"threshold": None, "quantile": 0.99, "policy": "adapt", "min_samples": 200},
    "refit": {"every": 0, "reservoir_size": 5000, "mode": "reservoir", "candidates": None,
              "criterion": "bic", "n_init": 2, "max_iter": 100, "seed": 0, "dask_scheduler": None},
    "checkpoint": {"directory": None, "every": 5000, "keep": 3},
    "metrics": {"port": None, "address": "127.0.0.1"},   # Prometheus endpoint (online_gmm.metrics)
    # scale-out (online_gmm.scale_out): worker processes of a local cluster, or a scheduler's address
    "cluster": {"workers": 0, "scheduler": None, "round_size": None, "read_ahead": True},
    "sinks": {},
}
_SINK_NAMES = ("scores", "anomalies", "dead_letters")


# ------------------------------------------------------------------------------------------ validation
class _Spec:
    """The type and range of one key: ``check(value)`` returns an error text or None."""

    def __init__(self, what: str, ok: Callable[[Any], bool], *, none: bool = False) -> None:
        self.what = what + (" (or omitted)" if none else "")
        self.ok = ok
        self.none = none

    def check(self, value: Any) -> str | None:
        if value is None and self.none:
            return None
        return None if self.ok(value) else f"must be {self.what}, got {value!r}"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _int(lo: int, hi: int | None = None, *, none: bool = False) -> _Spec:
    what = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
    return _Spec(what, lambda v: _is_int(v) and v >= lo and (hi is None or v <= hi), none=none)


def _number(what: str, ok: Callable[[float], bool] = lambda v: True, *, none: bool = False) -> _Spec:
    return _Spec(what, lambda v: _is_number(v) and ok(v), none=none)


def _choice(*options: str, none: bool = False) -> _Spec:
    return _Spec("one of " + ", ".join(map(repr, options)), lambda v: v in options, none=none)


def _str_list(what: str = "a non-empty list of non-empty strings", *, none: bool = False) -> _Spec:
    return _Spec(what, lambda v: isinstance(v, list) and bool(v)
                 and all(isinstance(x, str) and x for x in v), none=none)


def _str_or_list(what: str, *, none: bool = False) -> _Spec:
    return _Spec(what, lambda v: (isinstance(v, str) and bool(v))
                 or (isinstance(v, list) and bool(v) and all(isinstance(x, str) and x for x in v)),
                 none=none)


_BOOL = _Spec("true or false (a TOML boolean, not a string)", lambda v: isinstance(v, bool))
_STR = _Spec("a non-empty string", lambda v: isinstance(v, str) and bool(v), none=True)
_TABLE = _Spec("a table", lambda v: isinstance(v, Mapping))

#: section -> key -> the key's type and range, checked when the configuration is loaded. A key a
#: section declares in DEFAULTS but not here is passed through unchecked (its consumer checks it).
SPECS: dict[str, dict[str, _Spec]] = {
    "source": {
        "type": _choice("jsonl", "csv", "parquet", "kafka"),
        "path": _str_or_list("a path, a glob or a list of them", none=True),
        "fields": _str_list(none=True),
        "columns": _str_list(none=True),
        "header": _BOOL,
        "delimiter": _Spec("one character other than a quote or a newline",
                           lambda v: isinstance(v, str) and len(v) == 1 and v not in '\r\n"'),
        "missing": _choice("reject", "nan"),
        "carry": _str_list(none=True),
        "follow": _BOOL,
        "name": _STR,
        "timeout": _number("a number of seconds > 0", lambda v: v > 0),
        "topics": _str_or_list("a topic or a list of topics", none=True),
        "bootstrap_servers": _str_or_list("'host:port' or a list of them", none=True),
        "group_id": _STR,
        "max_idle_s": _number("a number of seconds >= 0", lambda v: v >= 0, none=True),
        "settings": _TABLE,
        "client": _choice("confluent", "kafka-python", none=True),
        "partitions": _Spec("a non-empty list of partition numbers >= 0",
                            lambda v: isinstance(v, list) and bool(v)
                            and all(_is_int(p) and p >= 0 for p in v), none=True),
    },
    "pipeline": {
        "batch_size": _int(1),
        "max_records": _int(0, none=True),
        "responsibilities": _BOOL,
        "features": _BOOL,
    },
    "anomaly": {
        "threshold": _number("a finite number", none=True),
        "quantile": _number("a number in (0, 1)", lambda v: 0 < v < 1),
        "policy": _choice("adapt", "protect"),
        "min_samples": _int(1),
    },
    "refit": {
        "every": _int(0),
        "reservoir_size": _int(1),
        "mode": _choice("reservoir", "window"),
        "candidates": _Spec("a non-empty list of integers >= 1",
                            lambda v: isinstance(v, list) and bool(v)
                            and all(_is_int(k) and k >= 1 for k in v), none=True),
        "criterion": _choice("bic", "aic"),
        "n_init": _int(1),
        "max_iter": _int(1),
        "seed": _int(0, 2**32 - 1),
        "dask_scheduler": _STR,
    },
    "checkpoint": {
        "directory": _STR,
        "every": _int(1),
        "keep": _int(1),
    },
    "metrics": {
        "port": _int(0, 65535, none=True),
        "address": _STR,
    },
    "cluster": {
        "workers": _int(0),
        "scheduler": _STR,
        "round_size": _int(1, none=True),
        "read_ahead": _BOOL,
    },
    "sinks": {
        "path": _STR,
        "fields": _str_list(none=True),
        "topic": _STR,
        "bootstrap_servers": _str_or_list("'host:port' or a list of them", none=True),
        "key": _STR,
        "settings": _TABLE,
        "client": _choice("confluent", "kafka-python", none=True),
        "row_group_size": _int(1),
    },
}


def _check_values(section: str, table: Mapping[str, Any], specs: Mapping[str, _Spec]) -> None:
    """Raise a ConfigError naming ``[section] key`` for the first value out of its type or range."""
    for key, value in table.items():
        spec = specs.get(key)
        problem = spec.check(value) if spec is not None else None
        if problem is not None:
            raise ConfigError(f"[{section}] {key} {problem}")


def _check_sink_needs(name: str, sink: Mapping[str, Any]) -> None:
    """The keys a sink type cannot do without, checked at load rather than when the job starts."""
    kind = sink["type"]
    needs = {"jsonl": ("path",), "csv": ("path", "fields"), "parquet": ("path",),
             "kafka": ("topic", "bootstrap_servers")}.get(kind, ())
    missing = [key for key in needs if not sink.get(key)]
    if missing:
        raise ConfigError(f"[sinks.{name}] type {kind!r} needs {', '.join(map(repr, missing))}")


def _check_model(model: Mapping[str, Any]) -> None:
    """Check ``[model]`` with the estimator's own parameter constraints (types and ranges), as
    :mod:`online_gmm.model_spec` declares them (without importing scikit-learn)."""
    from online_gmm.model_spec import InvalidParameterError, check_params
    try:
        check_params(model)
    except InvalidParameterError as exc:
        raise ConfigError(f"[model] {exc}") from None


def _model_keys() -> set[str]:
    from online_gmm.model_spec import PARAMETERS
    return set(PARAMETERS)


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
    (5000, 'adapt')
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
            _check_model(cfg["model"])
        elif section == "sinks":
            _check_keys("sinks", given, _SINK_NAMES)
            cfg["sinks"] = {}
            for name, sink in given.items():
                if not isinstance(sink, Mapping):
                    raise ConfigError(f"[sinks.{name}] must be a table, got {sink!r}")
                _check_keys(f"sinks.{name}", sink, _SINK_KEYS)
                _check_values(f"sinks.{name}", sink, SPECS["sinks"])
                cfg["sinks"][name] = {**copy.deepcopy(_SINK_KEYS), **sink}
                if cfg["sinks"][name]["type"] not in ("jsonl", "csv", "parquet", "kafka"):
                    raise ConfigError(f"[sinks.{name}] type must be 'jsonl', 'csv', 'parquet' or 'kafka', "
                                      f"got {sink.get('type')!r}")
                _check_sink_needs(name, cfg["sinks"][name])
        else:
            _check_keys(section, given, defaults)
            _check_values(section, given, SPECS.get(section, {}))
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
    return cfg


def _resolve(value: Any, base: Path) -> Any:
    """``value`` (a path, a glob or a list of them) made absolute against ``base``; URLs unchanged."""
    if isinstance(value, list):
        return [_resolve(v, base) for v in value]
    if not isinstance(value, str) or not value or "://" in value:
        return value
    expanded = Path(value).expanduser()
    return str(expanded if expanded.is_absolute() else base / expanded)


def load_config(path: str | Path) -> dict[str, Any]:
    """Read and validate a TOML configuration file.

    Relative paths in it (``[source] path``, ``[checkpoint] directory``, ``[sinks.*] path``) are
    resolved against the folder of the configuration file, not the working directory, so a job
    runs the same from anywhere; ``~`` is expanded.

    Raises
    ------
    ConfigError
        The file cannot be read, is not TOML, or a key is unknown or out of its type or range.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {str(path)!r}") from None
    except IsADirectoryError:
        raise ConfigError(f"configuration file {str(path)!r} is a directory") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read configuration file {str(path)!r}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    cfg = parse_config(raw)
    base = path.resolve().parent
    for table in [cfg["source"], cfg["checkpoint"], *cfg["sinks"].values()]:
        for key in ("path", "directory"):
            if table.get(key):
                table[key] = _resolve(table[key], base)
    return cfg


# ------------------------------------------------------------------------------------------ factories
def build_source(cfg: Mapping[str, Any]):
    """A :class:`connectors.base.Source` from a validated ``[source]`` table."""
    kind = cfg["type"]
    if kind == "jsonl":
        from connectors.files import JSONLinesSource
        return JSONLinesSource(cfg["path"], fields=cfg["fields"], missing=cfg["missing"],
                               follow=cfg["follow"], name=cfg["name"], timeout=cfg["timeout"],
                               carry=cfg["carry"] or ())
    if kind == "csv":
        from connectors.files import CSVSource
        return CSVSource(cfg["path"], columns=cfg["columns"] or cfg["fields"], header=cfg["header"],
                         delimiter=cfg["delimiter"], missing=cfg["missing"], follow=cfg["follow"],
                         name=cfg["name"], timeout=cfg["timeout"], carry=cfg["carry"] or ())
    if kind == "parquet":
        from connectors.files import ParquetSource
        return ParquetSource(cfg["path"], columns=cfg["columns"] or cfg["fields"], missing=cfg["missing"],
                             name=cfg["name"], carry=cfg["carry"] or ())
    from connectors.decoders import JSONDecoder
    from connectors.kafka import KafkaSource
    return KafkaSource(cfg["topics"], cfg["bootstrap_servers"], cfg["group_id"],
                       JSONDecoder(cfg["fields"], missing=cfg["missing"], carry=cfg["carry"] or ()),
                       name=cfg["name"],
                       max_idle_s=cfg["max_idle_s"], client=cfg["client"],
                       partitions=cfg.get("partitions"), **dict(cfg["settings"]))


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
    return KafkaSink(cfg["topic"], cfg["bootstrap_servers"], key=cfg["key"], client=cfg["client"],
                     **dict(cfg["settings"]))
