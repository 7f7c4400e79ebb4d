"""TVM's RPC tracker and servers as child processes (tests, and `reidc` users without a device
farm), and a query of how many devices a tracker has for a key."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from .presets import ToolchainError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tracker_devices(host: str, port: int, key: str) -> int:
    """Devices (free + busy) registered under `key`; 0 if the tracker is unreachable."""
    from tvm import rpc
    try:
        summary = rpc.connect_tracker(host, port).summary()
    except (OSError, RuntimeError):
        return 0
    return sum(1 for s in summary.get("server_info", []) if s.get("key", "").split(":")[-1] == key
               or s.get("key", "").startswith(f"server:{key}"))


@dataclass
class Process:
    """A child process in its own process group: `stop()` ends it and everything it started
    (TVM's RPC server forks popen workers that outlive a plain kill)."""
    args: list[str]
    env: dict = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    def start(self, log) -> "Process":
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, **self.env})
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=5)
                return
            except subprocess.TimeoutExpired:
                continue


def start_tracker(port: int, log) -> Process:
    p = Process([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port),
                 "--port-end", str(port + 1)]).start(log)
    _wait_port(port, p)
    return p


def start_server(tracker_port: int, key: str, log, python: list[str] | None = None, env: dict | None = None,
                 extra: list[str] | None = None) -> Process:
    """An RPC server registered with the tracker under `key` (`python`: the interpreter command,
    e.g. an aarch64 Python under qemu)."""
    port = free_port()
    cmd = (python or [sys.executable]) + ["-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(port),
                                          "--port-end", str(port + 1), "--tracker", f"127.0.0.1:{tracker_port}",
                                          "--key", key] + (extra or [])
    return Process(cmd, env or {}).start(log)


def wait_for_devices(port: int, key: str, n: int = 1, timeout_s: float = 60.0) -> None:
    t0 = time.monotonic()
    while tracker_devices("127.0.0.1", port, key) < n:
        if time.monotonic() - t0 > timeout_s:
            raise ToolchainError(f"no RPC server registered under key {key!r} within {timeout_s:.0f} s")
        time.sleep(0.5)


def _wait_port(port: int, proc: Process, timeout_s: float = 30.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if proc.proc.poll() is not None:
            raise ToolchainError(f"{' '.join(proc.args)} exited with {proc.proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise ToolchainError(f"nothing listens on port {port} after {timeout_s:.0f} s")
