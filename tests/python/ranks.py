"""Runs a job of distributed_jobs.py or fsdp_jobs.py on spawned gloo ranks."""
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

import distributed_jobs as jobs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(job: str, world: int, tmp_path: Path):
    """Runs jobs.<job> on `world` spawned ranks; every rank's result, in order."""
    out = tmp_path / job
    out.mkdir()
    ctx = mp.start_processes(jobs._spawned, args=(world, free_port(), job, str(out)),
                             nprocs=world, join=False, start_method="spawn")
    for p in ctx.processes:  # bounded: a hang fails the test instead of stalling CI
        p.join(120)
    alive = [p for p in ctx.processes if p.is_alive()]
    for p in alive:
        p.kill()
    assert not alive, f"{job}: {len(alive)} rank(s) still running after 120 s"
    results = [torch.load(out / f"rank{r}.pt") for r in range(world)]
    for r, res in enumerate(results):
        assert "ok" in res, f"{job} failed on rank {r}:\n{res['error']}"
    return [res["ok"] for res in results]
