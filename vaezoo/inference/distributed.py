"""Data-parallel training across processes (``torchrun``), as the Trainer uses it.

Every process holds the whole model and the whole dataset (MNIST-sized data fits in memory), takes
its share of each global batch, and the gradients are averaged across processes before every
optimizer step, so that N processes take exactly the steps one process would take on the global
batch. Everything here is a no-op in a single process.

Why not ``torch.nn.parallel.DistributedDataParallel``: DDP synchronizes the gradients of one
module's own parameters, but a user's plain-function model/guide pair may keep its networks in
Pyro's param store (``pyro.module``), outside any module the trainer holds. One flattened
``all_reduce`` per step covers every parameter, wherever it lives, with the same arithmetic.
"""

from __future__ import annotations

import os
from typing import Any, List, Sequence

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (or another launcher) with several processes."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: torch.device) -> torch.device:
    """Joins the process group ``torchrun`` describes in the environment (NCCL for a CUDA
    ``device``, already resolved and checked by the caller; Gloo on CPU) and returns this process's
    device (``cuda:LOCAL_RANK`` on GPUs)."""
    cuda = device.type == "cuda"
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return torch.device("cuda", local) if cuda else device


def shard(indices: torch.Tensor) -> torch.Tensor:
    """This process's share of a global batch's indices (strided, so shares differ by at most one)."""
    return indices[rank() :: world_size()] if is_distributed() else indices


def broadcast_parameters(params: Sequence[torch.Tensor]) -> None:
    """Makes every process start from rank 0's parameters."""
    if is_distributed():
        with torch.no_grad():
            for p in params:
                dist.broadcast(p.data, src=0)


def average_gradients(params: Sequence[torch.Tensor]) -> None:
    """Replaces each gradient by its mean over the processes (one flattened all-reduce; a missing
    gradient counts as zero, so that every process sends the same layout)."""
    if not is_distributed():
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for p, g in zip(params, grads):
        mean = flat[offset : offset + g.numel()].view_as(g)
        offset += g.numel()
        if p.grad is None:
            p.grad = mean.clone()
        else:
            p.grad.copy_(mean)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over the processes (in place; ``t`` itself in a single process)."""
    if is_distributed():
        dist.all_reduce(t)
    return t


def gather_objects(obj: Any) -> List[Any]:
    """Every process's ``obj``, in rank order (on every process)."""
    if not is_distributed():
        return [obj]
    out: List[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if is_distributed():
        dist.barrier()
