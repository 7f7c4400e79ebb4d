"""Supernet training on two gloo processes computes what one process computes on the same global
batch: the global-batch BN and the gathered loss (compiler/search/distributed.py), DDP's
gradient average, rank 0's checkpoint. Stated tolerance: the first step's loss within 1e-5
relative (float summation order: a BN's sums in two parts, a conv's threads); after it, the weights
within 1e-4 except where Adam's first step, a full +-lr whatever the gradient's size, took the
sign of a gradient that is 0 up to rounding: those elements differ by 2 lr, and they must be
rare (measured on a Zen 3: 1288 of 11.3M, 0.011%). Later losses drift through them, amplified
by the signs of the binarized layers: on the Zen 3 the second step's loss differs by 1.6%
(12.85 vs 13.06; on a Xeon the runs had agreed to 1e-7 for 3 steps), so it is held to 5%."""
import math

import pytest
import torch
from torch import nn

from reidc.compiler.datasets import load_dataset
from reidc.compiler.search.distributed import GlobalBatchNorm, global_batchnorm
from reidc.compiler.search.train import TrainConfig, loss_curve, read_record, train_supernet
from reidc.compiler.search.train_parallel import check_procs, train_parallel


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic:12", (64, 32), seed=3, hold_out_val=True)


def test_two_processes_follow_the_one_process_loss_curve(data, tmp_path):
    step1 = TrainConfig(steps=1, ids_per_batch=4, per_modality=2, seed=1)
    one, done1 = train_supernet(data, step1, tmp_path / "one")
    said = []
    two, done2 = train_parallel(data, step1, tmp_path / "two", procs=2, progress=said.append)
    assert done1 == done2 == 1 and any("on 2 processes" in s for s in said)
    l1, l2 = loss_curve(read_record(tmp_path / "one")), loss_curve(read_record(tmp_path / "two"))
    assert len(l1) == len(l2) == 1 and math.isfinite(l1[0]) and l2[0] == pytest.approx(l1[0], rel=1e-5)
    s1, s2 = one.state_dict(), two.state_dict()
    assert s1.keys() == s2.keys()
    flips = total = 0
    for k in s1:
        a, b = s1[k].float(), s2[k].float()
        off = ~torch.isclose(b, a, rtol=1e-4, atol=1e-4)
        # where they differ, Adam's first step went opposite ways: 2 lr apart, no more
        assert torch.all((b - a).abs()[off] <= 2 * step1.lr * 1.01), k
        flips, total = flips + int(off.sum()), total + a.numel()
    assert flips <= total // 1000, (flips, total)
    # both resumed: the second step from the first one's checkpoint, each curve keeps its first step
    step2 = TrainConfig(steps=2, ids_per_batch=4, per_modality=2, seed=1)
    _, done1 = train_supernet(data, step2, tmp_path / "one")
    _, done2 = train_parallel(data, step2, tmp_path / "two", procs=2)
    m1, m2 = loss_curve(read_record(tmp_path / "one")), loss_curve(read_record(tmp_path / "two"))
    assert done1 == done2 == 2 and m1[:1] == l1 and m2[:1] == l2
    assert m2[1] == pytest.approx(m1[1], rel=0.05)


def test_global_batchnorm_alone_is_plain_batchnorm_with_the_same_state():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(5), nn.BatchNorm1d(5))
    x = torch.randn(6, 3, 8, 8)
    ref = net(x)
    keys = net.state_dict().keys()
    global_batchnorm(net)
    assert isinstance(net[1], GlobalBatchNorm) and isinstance(net[1], nn.BatchNorm2d)
    assert isinstance(net[4], GlobalBatchNorm) and net.state_dict().keys() == keys
    torch.testing.assert_close(net(x), ref)      # one process: torch's own BN


def test_the_process_count_must_split_the_identities():
    check_procs(2, TrainConfig())
    with pytest.raises(ValueError, match="--train-procs 3: each process takes whole identities of the batch's 8"):
        check_procs(3, TrainConfig())
    with pytest.raises(ValueError, match="expected 1 or more"):
        check_procs(0, TrainConfig())


def test_torchrun_entry_trains_what_one_process_trains(data, tmp_path):
    """`torchrun --nproc_per_node 2 -m reidc.compiler.search.train_parallel` (the several-machine
    path, here on one): rank 0 writes a supernet a search with the same settings finds trained,
    with one process's loss curve."""
    import subprocess
    import sys
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "reidc.compiler.search.train_parallel", "-o", str(out), "--dataset", "synthetic:12",
           "--steps", "2", "--seed", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    cfg = TrainConfig(steps=2, seed=1)
    rec = read_record(out / "supernet")
    assert rec["steps_done"] == 2 and rec["config"]["seed"] == 1
    one, _ = train_supernet(load_dataset("synthetic:12", (64, 32), 1, hold_out_val=True), cfg, tmp_path / "one")
    for a, b in zip(loss_curve(read_record(tmp_path / "one")), loss_curve(rec)):
        assert b == pytest.approx(a, rel=1e-5)
    said = []
    train_supernet(load_dataset("synthetic:12", (64, 32), 1, hold_out_val=True), cfg, out / "supernet",
                   progress=said.append)
    assert said == [f"supernet in {out / 'supernet'} is trained (2 steps)"]
