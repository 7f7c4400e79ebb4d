"""`reidc search` when things go wrong: a time limit too short for a pick (planned up front,
refused in one line with a limit that would do, fresh and on resume), `-o` onto a user's folder,
corrupt or wrong-typed inputs (the latency cache, accuracy.json, the supernet's train.json),
Ctrl-C. Cheap: every run here stops before training or compiling anything real."""
import json
import os
import signal
import time

import pytest
from typer.testing import CliRunner

from reidc.compiler.cli import app
from reidc.compiler.search import search as search_mod
from reidc.compiler.search.budget import Budget, Costs, TimeLimitError, Work
from reidc.compiler.search.evolution import Candidate, evolve
from reidc.compiler.search.latency import LatencyMeter, Scenario
from reidc.compiler.search.files import guard_search_dir
from reidc.compiler.base.atomic import OutputError
from reidc.frontend.supernet import random_arch

SMALL = ["--dataset", "synthetic:12", "--train-steps", "3", "--population", "4", "--generations", "1",
         "--measure-front", "2", "--scenario", "visible:1", "--latency-table", "stages", "--latency-holdout", "0"]


def _search(out, *args, cache=None):
    r = CliRunner().invoke(app, ["search", "-o", str(out), "--latency-cache", str(cache or out.parent / "lat.json")]
                           + SMALL + list(args))
    text = " ".join(r.output.split())
    assert "Traceback" not in r.output and "max() arg" not in text, r.output
    return r.exit_code, text


def _timed_cache(path, seconds):
    """A latency cache that says a measurement on this machine takes `seconds` (for no table entry)."""
    path.write_text(json.dumps({"elsewhere": {"arch": "r18-64x32-b0000-s1", "target": "host", "ms": 2.0,
                                              "seconds": seconds}}))
    return path


def _free_probe(self):
    """Instead of timing a training step and an evaluation (seconds each)."""
    self.budget.costs.step, self.budget.costs.evaluate = 0.1, 1.0


# -- the time limit ---------------------------------------------------------------------------
class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _budget(limit_s, clock, **work):
    w = dict(table=6, table_all=False, steps_done=0, steps=600, evaluations=16, front=6, compare=True)
    w.update(work)
    return Budget(limit_s, clock(), Work(**w), Costs(measure=20.0, step=0.5, evaluate=8.0), clock=clock)


def test_budget_refuses_a_limit_that_leaves_no_pick_and_suggests_one_that_does():
    clock = Clock()
    b = _budget(180, clock)
    # least run: table 6 x 20 s + 60 of 600 steps x 0.5 s + 2 evaluations x 8 s + pick (3 x 20 s + 8 s + 5 s)
    assert b.need_s() == pytest.approx(120 + 30 + 16 + 73)
    with pytest.raises(TimeLimitError) as e:
        b.check()
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("--time-limit 3m leaves no time to evaluate candidates")
    assert "the latency table (6 compiles, ~2.0 min)" in msg and "at least 60 of 600 steps" in msg
    suggested = int(msg.split("about ")[1].split("m would do")[0])
    assert suggested * 60 >= b.full_s()                 # the whole run fits the suggestion
    _budget(suggested * 60, clock).check()


def test_budget_plans_training_and_evolution_inside_the_limit():
    clock = Clock()
    b = _budget(900, clock, table=0)                     # table cached; 600 steps (300 s) and 16 evaluations
    end = clock.now + 900
    b.check()
    train_end = b.train_deadline()
    assert clock.now + 30 <= train_end                   # at least the least training
    clock.now = train_end                                # training runs to its deadline
    b.work.steps = b.work.steps_done = int((train_end - 1000) / 0.5)
    b.check()                                            # the least evolution and the pick still fit
    evo_end = b.evolve_deadline()
    assert evo_end - train_end >= 2 * 8.0 and end - evo_end >= b.final_s(minimum=True)
    # a limit with room for everything: training runs all its steps, the evolution all its candidates
    clock2 = Clock()
    roomy = _budget(3600, clock2, table=0)
    assert roomy.train_deadline() - clock2.now >= 300 and roomy.evolve_deadline() - clock2.now >= 300 + 16 * 8


def test_evolution_evaluates_the_anchors_whatever_the_deadline():
    spec = random_arch(__import__("random").Random(0), (64, 32), 12)
    seen = []

    def evaluate(s):
        seen.append(s)
        return Candidate(s, 0.5, 1.0, {})

    got = evolve([spec, random_arch(__import__("random").Random(1), (64, 32), 12)], evaluate, "latency", None,
                 4, 3, 0, deadline=1.0, minimum=2)
    assert len(got) == 2 == len(seen)


def test_a_too_short_time_limit_is_one_line_with_a_limit_that_would_do_fresh_and_on_resume(tmp_path):
    cache = _timed_cache(tmp_path / "lat.json", 40.0)
    for _ in range(2):   # the rerun (a resume) says the same, and nothing was started
        code, text = _search(tmp_path / "out", "--time-limit", "2m", cache=cache)
        assert code == 1 and "error: --time-limit 2m leaves no time to evaluate candidates" in text, text
        assert "the latency table (6 compiles, ~4.0 min)" in text and "m would do" in text, text
    assert not (tmp_path / "out").exists()               # refused before writing anything
    # a resume with a partly trained supernet and scores: the same message, before more work
    from reidc.compiler.datasets import load_dataset
    from reidc.compiler.search.train import TrainConfig, train_supernet
    train_supernet(load_dataset("synthetic:12", (64, 32), 0), TrainConfig(steps=1), tmp_path / "out" / "supernet")
    rec = json.loads((tmp_path / "out" / "supernet" / "train.json").read_text())
    assert rec["steps_done"] == 1 and rec["seconds_per_step"] > 0
    code, text = _search(tmp_path / "out", "--time-limit", "2m", cache=cache)
    assert code == 1 and "leaves no time to evaluate candidates" in text and "m would do" in text, text
    assert json.loads((tmp_path / "out" / "supernet" / "train.json").read_text())["steps_done"] == 1


def test_the_limit_is_refused_where_the_first_measurement_shows_it(tmp_path, monkeypatch):
    """No cache: the table's first measurement tells the cost; the run stops there."""
    calls = []

    def fake_measure(self, spec, model, prepare_s=0.0):
        calls.append(spec)
        return {"ms": 1.0, "seconds": 300.0}

    monkeypatch.setattr(LatencyMeter, "measure", fake_measure)
    monkeypatch.setattr(search_mod._Search, "probe", _free_probe)
    monkeypatch.setattr(search_mod._Search, "model", lambda self, spec: None)
    code, text = _search(tmp_path / "out", "--time-limit", "10m")
    assert code == 1 and len(calls) == 1, text
    assert "the latency table (5 compiles, ~25.0 min)" in text and "m would do" in text, text


# -- -o ----------------------------------------------------------------------------------------
def test_o_onto_a_users_folder_is_refused_and_the_folder_untouched(tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.tex").write_text("precious")
    code, text = _search(user, "--time-limit", "1m")
    assert code == 1 and "holds files reidc search did not write (e.g. 'thesis.tex')" in text, text
    assert sorted(p.name for p in user.iterdir()) == ["thesis.tex"] and (user / "thesis.tex").read_text() == "precious"
    # a user's file inside a mode folder of a search folder
    (tmp_path / "s" / "latency-aware").mkdir(parents=True)
    (tmp_path / "s" / "latency-aware" / "notes.txt").write_text("mine")
    code, text = _search(tmp_path / "s", "--time-limit", "1m")
    assert code == 1 and "'latency-aware/notes.txt'" in text, text


@pytest.mark.parametrize("where, message", [(".", "is the current folder"), ("..", "is the current folder"),
                                            ("file", "exists and is not a folder"),
                                            ("file/out", "is not a folder")])
def test_o_that_is_the_current_folder_or_a_file_is_refused(tmp_path, monkeypatch, where, message):
    work = tmp_path / "work"
    work.mkdir()
    (work / "file").write_text("mine")
    monkeypatch.chdir(work)
    r = CliRunner().invoke(app, ["search", "-o", where, "--time-limit", "1m"] + SMALL)
    assert r.exit_code == 1 and message in " ".join(r.output.split()) and "Traceback" not in r.output, r.output
    assert (work / "file").read_text() == "mine" and sorted(p.name for p in work.iterdir()) == ["file"]


def test_a_search_folder_is_recognised_with_its_leftovers(tmp_path):
    out = tmp_path / "s"
    for d in ("supernet", "latency-aware/chosen", "latency-aware/chosen-host", "accuracy-only"):
        (out / d).mkdir(parents=True)
    for f in ("supernet/train.json", "supernet/supernet.safetensors", "accuracy.json", "latency-table.json",
              "latency-aware/pareto.json", "latency-aware/pareto.png", "latency-aware/chosen/arch.json",
              "latency-aware/chosen-host/manifest.json", "latency-aware/chosen-host/model.so",
              ".accuracy.json.partial-x1y2", "latency-aware/.chosen.partial-abc"):
        (out / f).write_text("{}")
    assert guard_search_dir(out) == out
    (out / "latency-aware" / "chosen" / "README").write_text("mine")
    with pytest.raises(OutputError, match="chosen"):
        guard_search_dir(out)


def test_a_read_only_output_folder_is_one_line(readonly):
    code, text = _search(readonly / "out", "--time-limit", "1m")
    assert code == 1 and str(readonly) in text and ("read-only" in text or "permission denied" in text), text


# -- untrusted inputs ----------------------------------------------------------------------------
@pytest.mark.parametrize("content", ['{"abc": {"ms": 1.0', "[1, 2]"])
def test_an_unreadable_latency_cache_is_a_warning_and_left_alone(tmp_path, monkeypatch, content):
    monkeypatch.setattr(search_mod._Search, "probe", _free_probe)
    cache = tmp_path / "lat.json"
    cache.write_text(content)
    code, text = _search(tmp_path / "out", "--time-limit", "1s", cache=cache)
    assert f"warning: latency cache {cache} is not a reidc latency cache" in text, text
    assert code == 1 and "--time-limit 1s leaves no time" in text, text
    assert cache.read_text() == content


def test_bad_latency_cache_entries_are_dropped(tmp_path):
    cache = tmp_path / "lat.json"
    good = {"arch": "a", "target": "host", "ms": 2.0, "seconds": 3.0}
    cache.write_text('{"good": %s, "nan": {"arch": "a", "target": "host", "ms": NaN}, '
                     '"neg": {"arch": "a", "target": "host", "ms": -1.0}, "str": {"arch": "a", "target": "host", '
                     '"ms": "fast"}, "list": [1], "badsec": {"arch": "a", "target": "host", "ms": 1.0, "seconds": -5}, '
                     '"badk": {"arch": "a", "target": "host", "ms": 1.0, "kernel_times": [{"key": "k", "ms": 1}]}}'
                     % json.dumps(good))
    said = []
    meter = LatencyMeter("host", Scenario("visible", 1), cache, progress=said.append)
    assert meter.cache == {"good": good} and meter.seconds_per_measurement() == 3.0
    assert len(said) == 1 and "dropped 6 bad entries" in said[0] and str(cache) in said[0]
    meter._write_cache()
    assert json.loads(cache.read_text()) == {"good": good} and oct(cache.stat().st_mode & 0o777) == "0o644"


@pytest.mark.parametrize("content, why", [
    ('{"r18": {"score": 0.5', "unreadable"),
    ("[]", "a JSON list"),
    ('{"r18": {"score": NaN, "settings": {}}}', "score is nan"),
    ('{"r18": {"score": "0.5", "settings": {}}}', "score is '0.5'"),
    ('{"r18": {"score": 0.5, "settings": {"all": {"mAP": "x"}}}}', "settings are not metrics"),
    ('{"r18": {"score": 0.5, "settings": {"all": {"mAP": 0.5, "mAP_ci95": [0.6, 0.4]}}}}', "settings are not metrics"),
    ('{"r18": {"score": 0.5, "settings": {"all": {"mAP": 0.5}}, "identity_stats": {"ids": [1, 2], "settings": '
     '{"all": {"sums": [[0.5]], "counts": [[1]]}}}}}', "identity_stats of all are not AP sums"),
    ('{"r18": {"score": 0.5, "settings": {"all": {"mAP": 0.5}}, "identity_stats": {"ids": [1], "settings": {}}}}',
     "identity_stats does not hold the scored settings"),
])
def test_a_corrupt_accuracy_json_is_one_line_naming_it(tmp_path, content, why):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "accuracy.json").write_text(content)
    code, text = _search(tmp_path / "out", "--time-limit", "1m")
    assert code == 1 and f"error: {tmp_path / 'out' / 'accuracy.json'}" in text and why in text, text
    assert (tmp_path / "out" / "accuracy.json").read_text() == content


@pytest.mark.parametrize("content, why", [("{", "unreadable"), ("[]", "a JSON list"),
                                          ('{"config": {}, "steps_done": "3"}', "steps_done is '3'")])
def test_a_corrupt_supernet_record_is_one_line_naming_it(tmp_path, content, why):
    sup = tmp_path / "out" / "supernet"
    sup.mkdir(parents=True)
    (sup / "train.json").write_text(content)
    code, text = _search(tmp_path / "out", "--time-limit", "1m")
    assert code == 1 and f"error: {sup / 'train.json'}" in text and why in text, text


def test_a_corrupt_supernet_checkpoint_is_one_line_naming_it(tmp_path):
    from reidc.compiler.datasets import load_dataset
    from reidc.compiler.search.train import TrainConfig, train_supernet
    sup = tmp_path / "out" / "supernet"
    train_supernet(load_dataset("synthetic:12", (64, 32), 0), TrainConfig(steps=1), sup)
    (sup / "supernet.safetensors").write_bytes(b"\x00" * 10)
    code, text = _search(tmp_path / "out", "--time-limit", "1m")
    assert code == 1 and f"error: {sup / 'supernet.safetensors'}: cannot load the supernet's state" in text, text


# -- Ctrl-C --------------------------------------------------------------------------------------
def test_ctrl_c_is_one_line_and_exit_130_even_when_a_subprocess_error_follows(tmp_path, monkeypatch):
    def compile_killed_by_the_same_sigint(self):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            raise RuntimeError("Compilation error: cc returned -2")   # what a wrapper makes of it

    before = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(search_mod._Search, "__init__", lambda self, out, opts: None)
    monkeypatch.setattr(search_mod._Search, "run", compile_killed_by_the_same_sigint)
    code, text = _search(tmp_path / "out", "--time-limit", "1m")
    assert code == 130 and "interrupted" in text and "error:" not in text, text
    assert signal.getsignal(signal.SIGINT) is before
