"""Supernet training on several processes of this machine (`reidc search --train-procs N`), or
of several machines under torchrun: each process trains on its share of every batch with the
global batch's BN statistics and loss (distributed.py), DDP averages the gradients, rank 0
checkpoints. The result is the one-process run's up to float summation order.

    torchrun --nnodes 2 --nproc-per-node 4 ... -m reidc.compiler.search.train_parallel \\
        -o DIR --dataset synthetic --steps 600 [--objective cmnas] [--seed 0] [--input-size 64x32]

trains the supernet of `reidc search -o DIR` (same dataset, input size, seed, steps and
objective), which then finds it trained. Backend: gloo (the processes train on their CPUs).
"""
from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from reidc.compiler.datasets import ReIDData, load_dataset

from .distributed import TrainStep, global_batchnorm, use_group
from .train import Parallel, TrainConfig, load_supernet, train_supernet


def check_procs(procs: int, cfg: TrainConfig) -> None:
    if procs < 1:
        raise ValueError(f"--train-procs {procs}: expected 1 or more")
    if procs > 1 and cfg.gal != "none":
        raise ValueError(f"--gal {cfg.gal} trains the supernet in one process (its discriminators are not "
                         "shared between processes); use --train-procs 1")
    if cfg.ids_per_batch % procs:
        raise ValueError(f"--train-procs {procs}: each process takes whole identities of the batch's "
                         f"{cfg.ids_per_batch}; use a number that divides it")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_here(rank: int, world: int, data: ReIDData, cfg: TrainConfig, out: Path, deadline: float | None,
                say: Callable[[str], None]):
    """This process's part of the run, its process group already initialised."""
    use_group(dist.new_group(backend="gloo"))
    net, opt, done = load_supernet(out, data, cfg)
    global_batchnorm(net)
    step = DistributedDataParallel(TrainStep(net, cfg.objective), find_unused_parameters=True,
                                   forward_sync_buffers=False)   # every process's BN buffers are the same already

    def agree(stop: bool) -> bool:
        flag = torch.tensor([1.0 if stop else 0.0])
        dist.all_reduce(flag)
        return bool(flag.item())
    return train_supernet(data, cfg, out, deadline, progress=say if rank == 0 else (lambda s: None),
                          state=(net, opt, done), parallel=Parallel(rank, world, step, agree))


def _worker(rank: int, world: int, port: int, data: ReIDData, cfg: TrainConfig, out: Path, deadline, messages):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        _train_here(rank, world, data, cfg, out, deadline, messages.put)
    finally:
        dist.destroy_process_group()


def train_parallel(data: ReIDData, cfg: TrainConfig, out: Path, procs: int, deadline: float | None = None,
                   progress: Callable[[str], None] = lambda s: None):
    """train_supernet on `procs` processes of this machine (gloo); returns what it returns."""
    check_procs(procs, cfg)
    out = Path(out)
    load_supernet(out, data, cfg)           # a bad or foreign supernet folder is refused here, once
    import torch.multiprocessing as mp
    messages = mp.get_context("spawn").SimpleQueue()
    ctx = mp.start_processes(_worker, args=(procs, _free_port(), data, cfg, out, deadline, messages),
                             nprocs=procs, join=False, start_method="spawn")
    progress(f"supernet training on {procs} processes (torch.distributed, gloo; global-batch BN and loss)")
    while True:
        finished = ctx.join(timeout=0.5)
        while not messages.empty():
            progress(messages.get())
        if finished:
            break
    net, _, done = load_supernet(out, data, cfg)
    return net.eval(), done


def main(argv=None) -> None:
    """The torchrun entry: every process runs this; the environment names its rank."""
    p = argparse.ArgumentParser(prog="python -m reidc.compiler.search.train_parallel")
    p.add_argument("-o", "--output", required=True, type=Path)
    p.add_argument("--dataset", default="synthetic")
    p.add_argument("--input-size", default="64x32")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--objective", default="cmnas")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        cfg = TrainConfig(steps=a.steps, seed=a.seed, objective=a.objective)
        check_procs(world, cfg)
        h, w = (int(v) for v in a.input_size.lower().split("x"))
        say = (lambda s: print(s, flush=True)) if rank == 0 else (lambda s: None)
        data = load_dataset(a.dataset, (h, w), a.seed, say, hold_out_val=True)
        _train_here(rank, world, data, cfg, a.output / "supernet", None, say)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
