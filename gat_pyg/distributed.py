"""Data-parallel training over processes with :mod:`torch.distributed`
(``gat-pyg train --loader neighbor --ddp``, started by ``torchrun``).

Every process (rank) holds the whole graph and a replica of the model, wrapped in
:class:`~torch.nn.parallel.DistributedDataParallel`; each epoch the training nodes are
dealt out so that rank :math:`r` trains on its own share of seed nodes
(:func:`gat_pyg.minibatch.epoch_seed_nodes`), and ``backward`` averages the gradients
across ranks, so that every optimizer step is one step on the union of the ranks' batches
and the replicas stay identical. Evaluation is deterministic and runs on every rank, so the
ranks take the same early-stopping decisions without exchanging them; only rank 0 writes
files.
"""
import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

__all__ = ['DistributedContext', 'LaunchError', 'TORCHRUN_VARIABLES', 'init_distributed',
           'wrap_model', 'all_gather_objects', 'barrier', 'rank_zero_first', 'shutdown']

TORCHRUN_VARIABLES = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')


class LaunchError(RuntimeError):
    """The process was not started as one rank of a ``torchrun`` job."""


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the process group."""
    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the one that prints and writes files."""
        return self.rank == 0


def init_distributed(backend: Optional[str] = None) -> DistributedContext:
    """Joins the process group that ``torchrun`` describes in the environment.

    Args:
        backend (str, optional): ``'gloo'`` or ``'nccl'``; default ``'nccl'`` when CUDA is
            available, else ``'gloo'`` (CPU).

    Raises:
        LaunchError: If the process was not started by ``torchrun`` (or with its
            environment variables).
    """
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise LaunchError(
            f"Distributed training needs the environment torchrun sets ({', '.join(missing)} "
            f"missing). Start it with, e.g., 'torchrun --nproc-per-node 2 -m gat_pyg train "
            f"--loader neighbor --ddp ...' (see 'Multi-process training' in the README)")
    if backend is None:
        backend = 'nccl' if torch.cuda.is_available() else 'gloo'
    if not dist.is_initialized():
        dist.init_process_group(backend)
    local_rank = int(os.environ['LOCAL_RANK'])
    if backend == 'nccl':
        torch.cuda.set_device(local_rank)
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, backend)


def wrap_model(model: torch.nn.Module, context: DistributedContext) -> DistributedDataParallel:
    """``model`` as a :class:`~torch.nn.parallel.DistributedDataParallel` replica (its
    parameters are broadcast from rank 0 here, so all ranks start alike)."""
    device_ids = [context.local_rank] if context.backend == 'nccl' else None
    return DistributedDataParallel(model, device_ids=device_ids)


def all_gather_objects(value: Any) -> List[Any]:
    """``value`` of every rank, in rank order (a picklable object)."""
    values: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def barrier() -> None:
    dist.barrier()


def shutdown() -> None:
    """Leaves the process group (if joined), once every rank has come to leave it: a gloo
    rank tearing down while another still talks to it can leave that one waiting."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


@contextlib.contextmanager
def rank_zero_first(context: Optional[DistributedContext]) -> Iterator[None]:
    """Runs the body on rank 0 before the other ranks (for work that writes shared files,
    such as PyG processing a dataset); without a context, just runs it."""
    if context is not None and not context.is_main:
        barrier()
    yield
    if context is not None and context.is_main:
        barrier()
