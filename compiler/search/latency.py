"""Measured latency of a candidate: compiled by reidc for the target, verified against
PyTorch where the build can run here, timed on the target (in this process, or on a device
behind TVM's RPC tracker) for a stated scenario; in this process each of its kernels is also
timed alone (the latency model's input: latency_model.py). Measurements are cached on disk by
(architecture, target, scenario, measurement setup), so reruns and the other search mode
reuse them."""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from reidc.compiler.base.atomic import OutputError, atomic_write_json
from reidc.compiler.base.version import __version__, codegen_digest
from reidc.compiler.ir import MODEL_MODES, RunMode
from reidc.frontend.arch import ArchSpec

from .latency_model import kernel_record, record_problem


BUSY_CORES = 0.3   # CPU cores other processes may use while a candidate is timed
BUSY_TRIES = 3


@dataclass(frozen=True)
class Scenario:
    """What a deployment runs: a batch of `batch` images of one modality, or mixed (half each)."""
    mode: RunMode = RunMode.MIXED
    batch: int = 8

    def __post_init__(self):
        object.__setattr__(self, "mode", RunMode(self.mode))

    @classmethod
    def parse(cls, text: str) -> "Scenario":
        mode, _, batch = text.partition(":")
        if not batch.isdigit() or int(batch) < 1:
            raise ValueError(f"--scenario {text!r}: expected MODE:BATCH with a batch of at least 1, e.g. mixed:8")
        try:
            return cls(RunMode.parse(mode, MODEL_MODES, "scenario mode"), int(batch))
        except ValueError as e:
            raise ValueError(f"--scenario {text!r}: {e}") from None

    def __str__(self) -> str:
        return f"{self.mode}:{self.batch}"

    def describe(self) -> str:
        if self.mode == RunMode.MIXED:
            return f"mixed batch of {self.batch} ({(self.batch + 1) // 2} visible + {self.batch // 2} infrared)"
        return f"{self.mode} batch of {self.batch}"

    def inputs(self, input_size) -> tuple[np.ndarray, object]:
        from reidc.compiler.reference import seeded_inputs
        x, m = seeded_inputs((3,) + tuple(input_size), self.batch, self.mode, seed=5)
        return x, (m if self.mode == RunMode.MIXED else self.mode)


def arch_key(spec: ArchSpec) -> str:
    """Only what changes the compiled program: depth, input size, splits, binarized stages."""
    return (f"r{spec.depth}-{spec.input_size[0]}x{spec.input_size[1]}-"
            f"b{''.join('1' if b else '0' for b in spec.binary_stages)}-s{''.join(map(str, spec.split))}")


def candidate_kernels(model, mode: RunMode, preset) -> list:
    """The kernels the candidate's program runs for `mode`, listed without building it
    (compiler/lower/kernel_list.py): what `LatencyMeter` compiles, up to TVM's fusion."""
    from reidc.compiler.compile import CompileOptions, prepare
    from reidc.compiler.lower.build import lowering_options
    from reidc.compiler.lower.kernel_list import program_kernels
    from reidc.compiler.lower.to_relax import to_relax
    from reidc.frontend.inmemory import module_source
    _, graphs, *_ = prepare(None, CompileOptions(modes=(str(mode),)), module_source(model))
    return program_kernels(to_relax(graphs, None, **lowering_options(preset)), preset, str(mode))


class LatencyMeter:
    """`measure(spec, model)` -> {"ms", ...}; `model` is the candidate's PyTorch network (its
    weights only matter for the verification, not for the program or its speed)."""

    def __init__(self, target: str, scenario: Scenario, cache: Path | None = None, rpc: tuple[str, str] | None = None,
                 number: int = 10, repeat: int = 5, progress: Callable[[str], None] = lambda s: None):
        from reidc.targets import get_target
        self.preset, self.target = get_target(target), target
        self.scenario, self.rpc, self.number, self.repeat, self.say = scenario, rpc, number, repeat, progress
        if rpc is None and self.preset.runs_via != "local":
            why = ("qemu emulation times are not the board's" if self.preset.runs_via == "qemu-aarch64"
                   else "it runs on a GPU")
            missing = self.preset.missing_on_host()
            if self.preset.runs_via == "qemu-aarch64" or missing:
                raise ValueError(f"target {self.preset.name}: latency cannot be measured on this machine ({why}); "
                                 "give --rpc-tracker HOST:PORT --rpc-key KEY of a device that runs it")
        from reidc.targets.arm_runtime import cache_root
        self.cache_path = Path(cache) if cache else cache_root() / "latency.json"
        self.writable = True     # False: the file is not a cache reidc may overwrite, or cannot be written
        self.cache = self._read_cache(warn=True)
        self.measured = 0
        self._lock = threading.Lock()

    def _read_cache(self, warn: bool) -> dict:
        """The cache file's valid entries. The file is input: an unreadable one is left alone
        (warned about, not written to), bad entries are dropped with a warning."""
        path = self.cache_path
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            data, why = None, str(e)
        else:
            why = None if isinstance(data, dict) else f"a JSON {type(data).__name__}, not an object"
        if why:
            self.writable = False
            if warn:
                self.say(f"warning: latency cache {path} is not a reidc latency cache ({why}); ignoring it and "
                         "not writing to it: delete it, or give another --latency-cache, to cache measurements")
            return {}
        good = {k: r for k, r in data.items() if cache_entry_problem(r) is None}
        if warn and len(good) < len(data):
            k = next(k for k in data if k not in good)
            self.say(f"warning: latency cache {path}: dropped {len(data) - len(good)} bad entr"
                     f"{'y' if len(data) - len(good) == 1 else 'ies'} (e.g. {k!r}: {cache_entry_problem(data[k])})")
        return good

    def seconds_per_measurement(self) -> float | None:
        """The median time of the cached measurements for this target, if any."""
        s = sorted(r["seconds"] for r in self.cache.values() if r.get("target") == self.preset.name and "seconds" in r)
        return s[len(s) // 2] if s else None

    def setup(self) -> dict:
        import tvm
        from reidc.compiler.runtime import tvm_threads
        threads = tvm_threads()   # what compiler.runtime.Compiled runs with
        where = f"rpc:{self.rpc[1]}" if self.rpc else f"local:{threads} threads"
        return {"target": self.preset.name, "tvm_target": self.preset.tvm, "scenario": str(self.scenario),
                "where": where, "tvm": tvm.__version__, "reidc": __version__, "codegen": codegen_digest(),
                "timing": f"min over {self.repeat} repeats of the mean of {self.number} runs",
                "kernels": None if self.rpc else "each alone, best of 3 alternating rounds of about 20 ms"}

    def key(self, spec: ArchSpec) -> str:
        blob = json.dumps({"arch": arch_key(spec), **self.setup()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def cached(self, spec: ArchSpec) -> dict | None:
        return self.cache.get(self.key(spec))

    def _write_cache(self) -> None:
        """Merge into the file (another search may have added entries meanwhile) and replace it;
        a cache that cannot be written costs a warning, not the search."""
        if not self.writable:
            return
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            self.cache = {**self._read_cache(warn=False), **self.cache}
            if self.writable:
                atomic_write_json(self.cache_path, self.cache, indent=0)
        except (OSError, OutputError) as e:
            self.writable = False
            self.say(f"warning: latency cache {self.cache_path} cannot be written ({e}); measurements are "
                     "not cached")

    def devices(self) -> int:
        """How many may time at once: the devices registered under the RPC key (1 in this process)."""
        if self.rpc is None:
            return 1
        from reidc.targets.rpc import tracker_devices
        host, _, port = self.rpc[0].rpartition(":")
        return max(1, tracker_devices(host, int(port), self.rpc[1]))

    def measure(self, spec: ArchSpec, model, prepare_s: float = 0.0) -> dict:
        """`prepare_s`: what making `model` took, counted in the record's `seconds`."""
        hit = self.cached(spec)
        if hit:
            return hit
        return self._timed(self._compile(spec, model, prepare_s))

    def measure_many(self, jobs: list[tuple[ArchSpec, Callable[[], object]]]) -> list[dict]:
        """Records of several candidates ((spec, make its model)), in order. Through an RPC
        tracker with several devices under the key, each is compiled here, one after another,
        and timed on a free device while the next compiles: up to as many at once as there
        are devices (the tracker leases each session a device of its own). Otherwise one by one."""
        n = self.devices()
        if n <= 1:
            return [self.cached(spec) or self.measure(spec, make()) for spec, make in jobs]
        from concurrent.futures import ThreadPoolExecutor
        out = []
        with ThreadPoolExecutor(n, thread_name_prefix="reidc-rpc") as pool:
            for spec, make in jobs:
                hit = self.cached(spec)
                if hit:
                    out.append(hit)
                    continue
                t = time.time()
                model = make()
                out.append(pool.submit(self._timed, self._compile(spec, model, time.time() - t)))
            return [r if isinstance(r, dict) else r.result() for r in out]

    def _compile(self, spec: ArchSpec, model, prepare_s: float) -> dict:
        """The candidate compiled (and verified) into a temporary folder that `_timed` removes."""
        from reidc.compiler.compile import CompileOptions, compile_checkpoint
        from reidc.frontend.checkpoint import save_checkpoint
        t0 = time.time() - prepare_s
        d = Path(tempfile.mkdtemp(prefix="reidc-lat-"))
        try:
            save_checkpoint(model, d / "ckpt")
            opts = CompileOptions(target=self.target, modes=(self.scenario.mode,),
                                  verify=not self.preset.missing_on_host() and (
                                      self.rpc is None or self.preset.runs_via != "cuda"))
            man = compile_checkpoint(d / "ckpt", d / "art", opts)
        except BaseException:
            shutil.rmtree(d, ignore_errors=True)
            raise
        return {"spec": spec, "model": model, "dir": d, "manifest": man, "t0": t0}

    def _timed(self, job: dict) -> dict:
        spec, man = job["spec"], job["manifest"]
        try:
            x, arg = self.scenario.inputs(spec.input_size)
            ms, kernels, busy = self._time(job["dir"] / "art", x, arg, job["model"])
        finally:
            shutil.rmtree(job["dir"], ignore_errors=True)
        rec = {"arch": arch_key(spec), "ms": ms, **self.setup(), "kernel_times": kernels,
               "others_cores": None if busy is None else round(busy, 2),
               "verified": man["verification"]["status"], "library_bytes": man["weights"]["artifact_bytes"],
               "seconds": round(time.time() - job["t0"], 1)}
        with self._lock:      # timing threads (measure_many) finish in any order
            self.cache[self.key(spec)] = rec
            self._write_cache()
            self.measured += 1
        return rec

    def _time(self, art: Path, x, arg, model) -> tuple[float, list[dict] | None, float | None]:
        """The whole run's ms; in this process also each kernel's ms per call alone (None
        through RPC: the instrument hook is the local VM's), and the CPU cores other processes
        used meanwhile (None through RPC). A machine busy with other work (more than
        `BUSY_CORES`) is waited for and timed again, up to `BUSY_TRIES` times: under contention
        every figure inflates, unevenly (measured here: a whole run 13.4 -> 28.1 ms, its kernels
        alone 13.2 -> 26.0 ms), and no model of the candidates can predict that."""
        from reidc.compiler.runtime import Compiled
        comp = Compiled(art, self.say, rpc=self.rpc)
        for _ in range(3):  # warm up, and let PyTorch's worker threads (verification) go idle first
            comp.run(x, arg)
        time.sleep(0.3)
        if self.rpc is not None:
            return comp.time_ms(x, arg, number=self.number, repeat=self.repeat), None, None
        from reidc.compiler.bench_load import OthersMeter
        listed = candidate_kernels(model, self.scenario.mode, self.preset)   # once, whatever the retries
        for attempt in range(BUSY_TRIES):
            others = OthersMeter().start()
            ms, kernels = self._time_here(comp, x, arg, listed)
            busy = others.cores()
            if busy is None or busy <= BUSY_CORES:
                break
            self.say(f"warning: other processes used {busy:.1f} cores while timing; "
                     + ("waiting 5 s and timing again" if attempt + 1 < BUSY_TRIES else
                        "keeping this measurement (its record says how busy the machine was)"))
            if attempt + 1 < BUSY_TRIES:
                time.sleep(5)
        return ms, kernels, busy

    def _time_here(self, comp, x, arg, listed) -> tuple[float, list[dict]]:
        ms = comp.time_ms(x, arg, number=self.number, repeat=self.repeat)
        from reidc.compiler.kernel_timing import record_kernels, time_kernels
        entry, arrays = comp.args(x, arg)
        calls, _ = record_kernels(comp, entry, arrays)
        alone = time_kernels(calls, budget_s=0.02)
        per_run: dict[str, float] = {}
        for key, (_, _, n) in calls.items():
            per_run[key[0]] = per_run.get(key[0], 0.0) + n * alone[key] * 1e3
        # a kernel the listing has but the VM never calls (a reshape that became a view) costs 0
        return ms, [kernel_record(k, per_run.get(k.name, 0.0) / k.calls) for k in listed]


def cache_entry_problem(rec) -> str | None:
    """Why a latency-cache entry cannot be used (None if it can)."""
    def number(v):
        return type(v) in (int, float) and math.isfinite(v)
    if not isinstance(rec, dict):
        return f"a JSON {type(rec).__name__}, not an object"
    if not number(rec.get("ms")) or rec["ms"] <= 0:
        return f"ms is {rec.get('ms')!r}, not a positive number"
    if "seconds" in rec and (not number(rec["seconds"]) or rec["seconds"] < 0):
        return f"seconds is {rec['seconds']!r}, not a duration"
    if not isinstance(rec.get("arch"), str) or not isinstance(rec.get("target"), str):
        return "no arch or target name"
    if rec.get("kernel_times") is not None:
        return record_problem(rec["kernel_times"])
    return None


def interleaved_ms(artifacts: dict[str, Path], scenario: Scenario, input_size, rounds: int = 8,
                   number: int = 10, rpc: tuple[str, str] | None = None) -> dict[str, float]:
    """Time several artifacts in alternating rounds (min per artifact), so that the slow drift
    of a shared machine's speed hits them alike; separate measurements minutes apart differ by
    more than the candidates do (measured here: the same network 20.8 to 27.0 ms)."""
    from reidc.compiler.runtime import Compiled
    comps = {k: Compiled(p, rpc=rpc) for k, p in artifacts.items()}
    x, arg = scenario.inputs(input_size)
    for c in comps.values():
        c.run(x, arg)
    best = {k: float("inf") for k in comps}
    for _ in range(rounds):
        for k, c in comps.items():
            best[k] = min(best[k], c.time_ms(x, arg, number=number, repeat=1))
    return best
