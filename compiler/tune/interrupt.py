"""Ctrl-C while tuning: the first stops after the batch being measured, the second at once.

TVM's tuning loop runs in C++ and calls back into Python (builder, runner, measure callbacks).
A KeyboardInterrupt raised inside such a callback unwinds through C++ frames that do not expect
it: std::terminate, which TVM reports as a segfault; or it leaves MetaSchedule's worker pools to
be shut down from a destructor on one of their own threads ("cannot join current thread").
And a terminal's Ctrl-C also reaches the builder and runner worker processes, whose deaths
would be recorded as failed trials. So while tuning, SIGINT never raises:

- the main thread blocks SIGINT, so every thread and worker process it starts later (the
  worker pools, the compilers they run) inherits the block and finishes its work;
- the signal is still caught, on a thread that does not block it, and CPython writes it to a
  wakeup fd that a watcher thread reads. The first Ctrl-C sets `requested` (the tuning loop
  checks it after each measured batch and between tasks); the second calls `hard_stop` (the CLI
  prints its one line) and ends the process with os._exit(130) once no write of the database is
  under way (writers hold `writing`), killing the worker processes first.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from typing import Callable


class TuningInterrupted(KeyboardInterrupt):
    """Ctrl-C: tuning stopped between batches; every finished trial is in the database."""


class Interrupts:
    def __init__(self, say: Callable[[str], None], hard_stop: Callable[[], None], wait_s: float = 10.0):
        self.say, self.hard_stop, self.wait_s = say, hard_stop, wait_s
        self.requested = False
        self.writing = threading.Lock()
        self._active = False

    def check(self) -> None:
        if self.requested:
            raise TuningInterrupted()

    def __enter__(self) -> "Interrupts":
        if threading.current_thread() is not threading.main_thread() or \
                signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            return self  # signals are the main thread's; and an ignored Ctrl-C (nohup, `&`) stays ignored
        self._read, self._write = socket.socketpair()
        self._write.setblocking(False)
        self._old_handler = signal.signal(signal.SIGINT, lambda signum, frame: None)
        self._old_fd = signal.set_wakeup_fd(self._write.fileno(), warn_on_full_buffer=False)
        self._watcher = threading.Thread(target=self._watch, name="reidc-sigint", daemon=True)
        self._watcher.start()  # before the block below: this thread can take the signal
        self._old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        self._active = True
        return self

    def __exit__(self, *exc) -> None:
        if not self._active:
            return
        self._active = False
        signal.pthread_sigmask(signal.SIG_SETMASK, self._old_mask)
        signal.set_wakeup_fd(self._old_fd)
        signal.signal(signal.SIGINT, self._old_handler)
        self._write.close()   # the watcher reads end-of-file and returns
        self._watcher.join(timeout=5)
        self._read.close()

    def _watch(self) -> None:
        count = 0
        while True:
            try:
                data = self._read.recv(64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum != signal.SIGINT:
                    continue
                count += 1
                if count == 1:
                    self.requested = True
                    self.say("stopping after this batch (Ctrl-C again to stop at once)")
                else:
                    self._stop_now()

    def _stop_now(self) -> None:
        """Wait (a little) for a write of the database to finish, report, and end the process."""
        self.writing.acquire(timeout=self.wait_s)
        try:
            self.hard_stop()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:  # noqa: BLE001  (exiting regardless)
                    pass
            _kill_children()
            os._exit(130)


def _kill_children() -> None:
    try:
        import psutil
        for child in psutil.Process().children(recursive=True):
            try:
                child.kill()
            except psutil.Error:
                pass
    except Exception:  # noqa: BLE001  (exiting regardless)
        pass
