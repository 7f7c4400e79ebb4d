"""What the pass Before/Expected tests (test_pass_bn_expected.py, test_pass_binary_expected.py,
test_pass_misc_expected.py) share: the tolerance, the input lines X and M, `graph` (an IR text from
its lines), `run_pass` (a pass run with the interpreter check), `unchanged`, and CONV_BN, a conv ->
shared BN that fold_shared_bn folds and other passes must leave alone. Not a test module.
"""
from __future__ import annotations

import numpy as np

from reidc.compiler.ir import verify
from reidc.compiler.ir.compare import assert_ir
from reidc.compiler.ir.parse import parse
from reidc.compiler.passes.rewrite import Applied
from ir_interp import run_ir

RTOL = 1e-5
MIX = np.array([0, 1, 1, 0], np.int32)
X = "%x: float32[Nx2x4x4] = input() {name='x'}"
M = "%modality: int32[N] = input() {name='modality'}"


def graph(body: str) -> str:
    """An IR text: `graph t {`, the lines of body (the last names the output), `return`."""
    lines = [ln.strip() for ln in body.strip().splitlines()]
    out = lines[-1].split(":")[0]
    return "graph t {\n" + "\n".join("  " + ln for ln in lines) + f"\n  return {out}\n}}\n"


def run_pass(p, before: str, codes=MIX, **kw):
    """The pass's graph for the parsed `before` (verified), after checking that both graphs give
    the same numbers on one input (`codes`: the modality codes of the batch)."""
    g = verify(parse(before))
    out = p(g, **kw)
    out = verify(out.graph if isinstance(out, Applied) else out)
    x = np.random.default_rng(0).standard_normal((len(codes),) + g["x"].shape[1:]).astype(np.float32)
    np.testing.assert_allclose(run_ir(out, x, codes), run_ir(g, x, codes), rtol=1e-5, atol=1e-5)
    return out


def unchanged(p, before: str, **kw):
    assert_ir(run_pass(p, before, **kw), before, rtol=0)



# a conv -> shared BN: fold_shared_bn's Before; the passes for other BNs leave it alone
CONV_BN = graph(f"""
    {X}
    %c: float32[Nx2x4x4] = conv2d(%x) {{bias=<2 float32: 1 -1>, padding=(0, 0), stride=(1, 1), weight=<2x2x1x1 float32: 1 2 3 4>}}  # conv
    %bn: float32[Nx2x4x4] = batch_norm @shared(%c) {{eps=1e-05, params={{shared: (<2 float32: 1 3>, <2 float32: 0 1>, <2 float32: 1 0>, <2 float32: 4 1>)}}}}  # bn
    %r: float32[Nx2x4x4] = relu(%bn)
""")
