"""The rewrite driver (compiler/passes/rewrite.py): rules return a Rewrite or None and the driver
does the surgery; and no pass changes the graph it is given."""
import sys
from collections import Counter

import numpy as np
import pytest

from reidc.compiler.ir import Graph, Node, Op, dump, verify
from reidc.compiler.passes.pipeline import passes_for, run_pipeline
from reidc.compiler.passes.rewrite import Fresh, Rewrite, Rule, apply_rules
from reidc.frontend.capture import capture_module
from reidc.frontend.zoo import zoo_model
from ir_interp import run_ir

X = np.random.default_rng(0).standard_normal((2, 4, 6, 6), dtype=np.float32)


def _chain(*ops) -> Graph:
    """x -> ops[0] -> ops[1] ...; each (id, op, attrs) keeps the (N, 4, 6, 6) shape."""
    g = Graph("chain")
    prev = g.add("x", Node(Op.INPUT, (), ("N", 4, 6, 6), attrs={"name": "x"}))
    for k, (nid, op, attrs) in enumerate(ops, start=1):
        prev = g.add(nid, Node(op, (prev,), ("N", 4, 6, 6), attrs=attrs), order=k)
    g.outputs = [prev]
    return g


def _affine(scale, bias=0.0):
    return {"scale": np.full(4, scale, np.float32), "bias": np.full(4, bias, np.float32)}


def _snapshot(g: Graph):
    return dump(g), {nid: g[nid] for nid in g.node_ids()}, list(g.outputs), dict(g.meta)


def _unchanged(g: Graph, snap) -> bool:
    text, nodes, outputs, meta = snap
    return (dump(g) == text and g.node_ids() == list(nodes) and all(g[i] is n for i, n in nodes.items())
            and g.outputs == outputs and g.meta == meta)


def test_a_rule_returning_none_changes_nothing_and_counts_nothing():
    g = _chain(("a", Op.AFFINE, _affine(2.0)), ("r", Op.RELU, {}))
    snap = _snapshot(g)
    st = Counter()
    out, facts = apply_rules(g, [Rule("never", Op.AFFINE, lambda g, nid, n: None)], st)
    assert out is not g and _unchanged(out, snap) and _unchanged(g, snap)
    assert st == Counter() and facts == {}


def test_a_failing_guard_is_counted_and_the_rewrite_not_called():
    g = _chain(("a", Op.AFFINE, _affine(2.0)), ("r", Op.RELU, {}))
    called = []
    rule = Rule("r", Op.RELU, lambda g, nid, n: called.append(nid), (("producer is relu", lambda g, nid, n: False),))
    st = Counter()
    apply_rules(g, [rule], st)
    assert st == Counter({"r:skipped:producer is relu": 1}) and not called


def _drop_identity(g, nid, n):
    if (n.attrs["scale"] == 1).all() and not n.attrs["bias"].any():
        return Rewrite(forward=n.inputs[0], note="identity")
    return None


def test_forwarding_moves_every_use_and_removes_the_match():
    g = _chain(("a", Op.AFFINE, _affine(1.0)), ("r", Op.RELU, {}), ("b", Op.AFFINE, _affine(1.0)))
    st = Counter()
    out = verify(apply_rules(g, [Rule("drop_identity", Op.AFFINE, _drop_identity)], st).graph)
    assert st == Counter({"drop_identity": 2})
    assert out.node_ids() == ["x", "r"] and out["r"].inputs == ("x",) and out.outputs == ["r"]  # b was the output
    np.testing.assert_array_equal(run_ir(out, X), run_ir(g, X))
    assert len(g) == 4 and g.outputs == ["b"]  # the input graph is untouched


def _insert_relu(g, nid, n):
    """affine -> relu(new) -> affine(match): the new node is named by its hint."""
    r = Fresh("x")  # taken: the driver must pick another id
    return Rewrite(node=n.with_(inputs=(r,)), add={r: Node(Op.RELU, n.inputs, n.shape)}, note="relu")


def test_new_nodes_get_fresh_ids_and_a_place_before_the_match():
    g = _chain(("a", Op.AFFINE, _affine(2.0)), ("b", Op.AFFINE, _affine(-1.0, 0.5)), ("c", Op.AFFINE, _affine(3.0)))
    st = Counter()
    out = verify(apply_rules(g, [Rule("insert_relu", Op.AFFINE, _insert_relu)], st).graph)
    assert st["insert_relu"] == 3
    assert [n for n in out.topo()] == ["x", "x_1", "a", "x_2", "b", "x_3", "c"]
    assert [out[i].inputs for i in ("x_1", "a", "x_2", "b")] == [("x",), ("x_1",), ("a",), ("x_2",)]
    assert all(type(i) is str for _, n in out.items() for i in n.inputs)  # no Fresh hint is left
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    want = 3 * relu(-relu(2 * relu(X)) + 0.5)
    assert want.any()
    np.testing.assert_allclose(run_ir(out, X), want, rtol=1e-6)


def test_producers_are_replaced_and_a_producer_left_unused_goes():
    g = _chain(("a", Op.AFFINE, _affine(2.0, 1.0)), ("b", Op.AFFINE, _affine(3.0)))

    def merge(g, nid, n):  # b(a(x)) -> one affine at b; a is left without uses
        a = g[n.inputs[0]]
        attrs = {"scale": a.attrs["scale"] * n.attrs["scale"], "bias": a.attrs["bias"] * n.attrs["scale"]}
        return Rewrite(node=n.with_(inputs=a.inputs, attrs=attrs), facts={nid: "merged"})

    out, facts = apply_rules(g, [Rule("merge", Op.AFFINE, merge, (("producer is affine", lambda g, nid, n:
                                                                       g[n.inputs[0]].op == Op.AFFINE),))])
    assert out.node_ids() == ["x", "b"] and facts == {"b": "merged"}
    np.testing.assert_allclose(run_ir(out, X), run_ir(g, X), rtol=1e-6)

    def bad(g, nid, n):  # "x" is not a producer of "b"
        return Rewrite(producers={"x": g["x"]})

    with pytest.raises(ValueError, match="its producers only"):
        apply_rules(g, [Rule("bad", Op.AFFINE, bad)])


def test_a_rewrite_replaces_or_forwards_never_both():
    n = Node(Op.RELU, ("x",), ("N", 4))
    with pytest.raises(ValueError, match="not both"):
        Rewrite(node=n, forward="x")
    with pytest.raises(TypeError, match="Fresh"):
        Rewrite(add={"plain": n})


@pytest.fixture(scope="module")
def captured():
    bire = zoo_model("bire-resnet18", "random:5", seed=1, input_size=(64, 32))
    cmnas = zoo_model("cmnas-resnet18", "random:7", seed=1, input_size=(64, 32))
    return [capture_module(m, (3, 64, 32)) for m in (bire, cmnas)]


_SURGERY = ("add", "replace", "redirect", "remove")


@pytest.mark.parametrize("mode", ["visible", "infrared", "mixed"])
def test_no_pass_changes_its_input_and_only_the_driver_does_surgery(captured, mode, monkeypatch):
    """Every pass of every pipeline leaves the graph it is given as it was; rules never call the
    Graph's surgery methods (only the driver, dead-node removal and Graph itself do)."""
    allowed = {"_apply", "remove_dead_nodes", "redirect"}
    for name in _SURGERY:
        method = getattr(Graph, name)

        def guarded(self, *a, _method=method, _name=name, **kw):
            caller = sys._getframe(1).f_code.co_name
            assert caller in allowed, f"Graph.{_name} called from {caller}"
            return _method(self, *a, **kw)
        monkeypatch.setattr(Graph, name, guarded)
    for g in captured:
        fired = Counter()
        for step in passes_for(mode):
            snap = _snapshot(g)
            out = step.run(g, stats=fired)
            assert _unchanged(g, snap), f"{step.name} changed its input graph"
            g = out.graph if step.reports else out
        assert fired["fold_shared_bn_into_conv"] or fired["fold_split_bn_after_conv"]  # the rules did run
    g = captured[0]
    snap = _snapshot(g)
    run_pipeline(g, mode)
    assert _unchanged(g, snap)
