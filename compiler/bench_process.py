"""The engines of `reidc bench` and `python -m compiler.layer_bench` as processes: each engine a
worker (compiler/bench_worker.py) in a process group of its own, driven over a socket pair; a
worker that fails or dies becomes an EngineError (or the user's error it raised) naming the
engine and how it ended, and stopping one stops whatever it started."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from .base.errors import EngineError, user_error_class

LABELS = {"reidc": "reidc", "torch_eager": "PyTorch eager", "torch_compile": "torch.compile",
          "onnxruntime": "ONNX Runtime", "onnxruntime_int8": "ONNX Runtime int8", "openvino": "OpenVINO",
          "openvino_bf16": "OpenVINO bf16", "openvino_int8": "OpenVINO int8",
          "torch_fp16": "PyTorch fp16 (autocast)",
          # one binary layer (compiler/layer_bench.py)
          "layer_reidc": "reidc (binary)", "layer_openvino": "OpenVINO BinaryConvolution",
          "layer_torch": "PyTorch float conv"}


def _exit_text(rc: int | None) -> str:
    if rc is None:
        return "still running"
    if rc < 0:
        try:
            return f"killed by signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit status {rc}"


def _exited(pid: int) -> bool:
    """Whether our child `pid` has ended, without reaping it (its group can still be killed)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


class Worker:
    """One engine in its own process and process group (so stopping it stops whatever it started)."""

    def __init__(self, name: str, spec: dict):
        from multiprocessing.connection import Connection
        self.name, self.label = name, engine_label(name)
        mine, theirs = socket.socketpair()
        env = {**os.environ, "TVM_NUM_THREADS": str(spec["threads"]), "OMP_NUM_THREADS": str(spec["threads"])}
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "reidc.compiler.bench_worker", str(theirs.fileno())],
                                         pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL,
                                         stdout=2, start_new_session=True)  # its prints go to our stderr
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        self.conn = Connection(mine.detach())
        self.pid = self.proc.pid
        self._send(("build", spec), "starting")

    def _send(self, msg, doing: str) -> None:
        try:
            self.conn.send(msg)
        except OSError:
            raise self._died(doing) from None

    def reply(self, doing: str):
        """The worker's answer to the last request; EngineError if it fails or dies meanwhile."""
        while not self.conn.poll(0.2):
            if _exited(self.pid) and not self.conn.poll(0):
                raise self._died(doing)
        try:
            kind, *payload = self.conn.recv()
        except (EOFError, OSError):
            raise self._died(doing) from None
        if kind == "error":
            raise self._failed(doing, *payload)
        return payload[0]

    def ask(self, msg: tuple, doing: str):
        self._send(msg, doing)
        return self.reply(doing)

    def _died(self, doing: str) -> EngineError:
        self.kill()
        return EngineError(f"the {self.label} worker (pid {self.pid}) died while {doing}: "
                           f"{_exit_text(self.proc.returncode)}")

    def _failed(self, doing: str, type_name: str, line: str, tb: str) -> Exception:
        self.kill()
        user = user_error_class(type_name)
        if user is not None:
            return user(f"{self.label}: {line}")
        e = EngineError(f"the {self.label} worker failed while {doing}: {type_name}: {line}")
        e.worker_traceback = tb
        return e

    def kill(self) -> None:
        """Kill the worker and everything it started, and reap it (its exit status is kept)."""
        if self.proc.returncode is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait()
        self.conn.close()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the worker to exit; kill it (and its group) if it does not within `timeout_s`."""
        if self.proc.returncode is None:
            try:
                self.conn.send(("stop",))
                deadline = time.monotonic() + timeout_s
                while not _exited(self.pid) and time.monotonic() < deadline:
                    time.sleep(0.02)
            except OSError:
                pass
        self.kill()


def engine_label(name: str) -> str:
    """What a person reads for an engine's key: "torch_eager" -> "PyTorch eager"."""
    base = name.removeprefix("baseline_")
    return LABELS[base] if base == name else f"baseline {LABELS[base]}"


def start_workers(engines: dict[str, dict], progress=lambda s: None) -> dict[str, Worker]:
    """Start every engine's worker (they build side by side: nothing is timed yet) and wait
    until all are ready. On any failure, or Ctrl-C, the ones started are killed."""
    workers: dict[str, Worker] = {}
    try:
        for name, spec in engines.items():
            workers[name] = Worker(name, spec)
        for w in workers.values():
            progress(f"building {w.label} (pid {w.pid})")
            w.reply("building")
    except BaseException:
        shutdown(workers, polite=False)
        raise
    return workers


def shutdown(workers: dict[str, Worker], polite: bool = True) -> None:
    """Stop every worker (asking first if `polite`); whatever happens meanwhile, Ctrl-C
    included, none is left running."""
    try:
        if polite:
            for w in workers.values():
                w.stop()
    finally:
        for w in workers.values():
            w.kill()
