r"""Mini-batches of sampled subgraphs through PyG's :class:`~torch_geometric.loader.NeighborLoader`.

Training (``gat-pyg train --loader neighbor``) splits each epoch's seed (training) nodes
into batches and samples a fixed number of neighbours per hop around each batch; the loss
is taken on the seed nodes, which the loader puts first. Which seed nodes go into which
batch is decided by :func:`epoch_seed_nodes` and :func:`split_into_batches` alone, from
``(seed, epoch, rank, world_size)``:

- every epoch is a fresh permutation of the training nodes, the same on every machine, so
  a run resumed at an epoch boundary sees the same batches as an uninterrupted one;
- with ``world_size`` processes (data-parallel training), rank :math:`r` takes the
  :math:`r`-th of ``world_size`` disjoint shares of that permutation: together the ranks
  cover every training node exactly once per epoch, and every rank gets the same number of
  batches (:func:`num_batches`), as synchronous data-parallel training needs.

:class:`SeedBatchSampler` hands those batches to a ``NeighborLoader`` (its
``batch_sampler``), like :class:`torch.utils.data.DistributedSampler` with ``set_epoch``.

Evaluation does not sample: :func:`full_neighborhood_loader` yields every node's complete
one-hop neighbourhood, batch by batch, for layer-wise inference over the whole graph
(:meth:`gat_pyg.nn.models.GAT.inference`).
"""
import hashlib
import math
import warnings
from typing import Iterator, List, Optional, Sequence

import torch
import torch_geometric.typing
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.loader import NeighborLoader

__all__ = ['INSTALL_HINT', 'require_neighbor_sampler', 'neighbor_loader',
           'full_neighborhood_loader', 'epoch_seed_nodes', 'num_batches',
           'split_into_batches', 'SeedBatchSampler', 'seed_node_loader']

INSTALL_HINT = ("MAX_JOBS=2 python -m pip install --no-build-isolation torch_scatter "
                "torch_sparse (a source build against the installed torch, about 20 minutes "
                "the first time; see 'Set-up' in the README)")


def require_neighbor_sampler() -> None:
    """Raises :class:`ImportError`, saying how to install one, when neither backend of
    PyG's neighbour sampling (``torch_sparse`` or ``pyg-lib``) is installed."""
    if not (torch_geometric.typing.WITH_TORCH_SPARSE or torch_geometric.typing.WITH_PYG_LIB):
        raise ImportError(f"Neighbour sampling (--loader neighbor, GAT.inference with a "
                          f"graph) needs 'torch_sparse' or 'pyg-lib', and neither is "
                          f"installed. Install them with: {INSTALL_HINT}")


def neighbor_loader(data: Data, num_neighbors: Sequence[int], **kwargs) -> NeighborLoader:
    """A :class:`~torch_geometric.loader.NeighborLoader` over ``data`` (``kwargs`` go to
    it), after checking that a sampling backend is installed
    (:func:`require_neighbor_sampler`)."""
    require_neighbor_sampler()
    with warnings.catch_warnings():
        # torch_sparse is the backend the README installs; PyG nudges towards pyg-lib.
        warnings.filterwarnings('ignore', message=".*'NeighborSampler' without a 'pyg-lib'")
        return NeighborLoader(data, list(num_neighbors), **kwargs)


def full_neighborhood_loader(edge_index: Tensor, num_nodes: int,
                             batch_size: int) -> NeighborLoader:
    r"""Batches of ``batch_size`` consecutive target nodes, each with all of its incoming
    edges: every batch is a bipartite graph whose first ``batch.batch_size`` nodes
    (``batch.n_id``) are the targets and every edge of ``batch.edge_index`` ends at one
    of them. Together the batches hold each edge of ``edge_index`` once.

    Only the structure is loaded (no node features), for layer-wise inference, where each
    layer gathers its own input rows by ``batch.n_id``.

    Args:
        edge_index (torch.Tensor): The graph :math:`(2, E)`, the edge :math:`j \to i` as
            the column ``(j, i)``.
        num_nodes (int): Number of nodes :math:`N`.
        batch_size (int): Target nodes per batch.
    """
    return neighbor_loader(Data(edge_index=edge_index, num_nodes=num_nodes), [-1],
                           batch_size=batch_size, shuffle=False)


def epoch_seed_nodes(train_idx: Tensor, epoch: int, seed: int, rank: int = 0,
                     world_size: int = 1) -> Tensor:
    r"""The seed nodes of process ``rank`` for ``epoch``, in training order.

    A permutation of ``train_idx`` is drawn from a generator seeded with a hash of
    ``(seed, epoch)`` and cut into ``world_size`` contiguous shares of
    :math:`\lfloor n / w \rfloor` or :math:`\lceil n / w \rceil` nodes; rank :math:`r` gets
    share :math:`r`. The shares are disjoint and together hold every node of
    ``train_idx`` once, and the result depends only on the arguments.

    Args:
        train_idx (torch.Tensor): The training nodes :math:`(n)`.
        epoch (int): The epoch (any integer; 1-based in :func:`gat_pyg.training.train_run`).
        seed (int): The run's seed.
        rank (int, optional): This process's rank. (default: :obj:`0`)
        world_size (int, optional): Number of processes. (default: :obj:`1`)

    Returns:
        torch.Tensor: This rank's seed nodes, :math:`(\lfloor n / w \rfloor)` or
        :math:`(\lceil n / w \rceil)`.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"'rank' must lie in [0, world_size) (got rank={rank}, "
                         f"world_size={world_size})")
    # torch's CPU generator keeps 32 bits of its seed: hash (seed, epoch) into them.
    digest = hashlib.sha256(f'{seed},{epoch}'.encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:4], 'little'))
    order = torch.randperm(train_idx.numel(), generator=generator)
    return train_idx[torch.tensor_split(order, world_size)[rank]]


def num_batches(num_seeds: int, batch_size: int, world_size: int = 1) -> int:
    r"""The number of batches per epoch on every rank: :math:`\lceil \lceil n / w \rceil /
    b \rceil` for :math:`n` seed nodes, :math:`w` ranks and batches of at most :math:`b`
    nodes."""
    return math.ceil(math.ceil(num_seeds / world_size) / batch_size)


def split_into_batches(seed_nodes: Tensor, count: int) -> List[Tensor]:
    """``seed_nodes`` cut, in order, into ``count`` contiguous batches whose sizes differ by
    at most one."""
    if not 1 <= count <= seed_nodes.numel():
        raise ValueError(f'Cannot split {seed_nodes.numel()} seed nodes into {count} '
                         f'non-empty batches (too few training nodes for this batch size '
                         f'and number of processes)')
    return list(torch.tensor_split(seed_nodes, count))


class SeedBatchSampler:
    r"""The ``batch_sampler`` of a :class:`~torch_geometric.loader.NeighborLoader` built with
    ``input_nodes=train_idx``: yields, for the current epoch (:meth:`set_epoch`), the
    positions in ``train_idx`` of the batches of :func:`epoch_seed_nodes` for this rank,
    split by :func:`split_into_batches` into :func:`num_batches` batches of at most
    ``batch_size`` nodes.

    Args:
        num_seeds (int): Number of training nodes :math:`n` (``train_idx.numel()``).
        batch_size (int): Most seed nodes per batch.
        seed (int): The run's seed.
        rank (int, optional): This process's rank. (default: :obj:`0`)
        world_size (int, optional): Number of processes. (default: :obj:`1`)
    """
    def __init__(self, num_seeds: int, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"'batch_size' must be positive (got {batch_size})")
        self.num_seeds = num_seeds
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch: Optional[int] = None

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch whose batches the next iteration yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        return num_batches(self.num_seeds, self.batch_size, self.world_size)

    def __iter__(self) -> Iterator[List[int]]:
        if self.epoch is None:
            raise RuntimeError('SeedBatchSampler: call set_epoch(epoch) before iterating')
        positions = epoch_seed_nodes(torch.arange(self.num_seeds), self.epoch, self.seed,
                                     self.rank, self.world_size)
        for batch in split_into_batches(positions, len(self)):
            yield batch.tolist()


def seed_node_loader(data: Data, train_idx: Tensor, num_neighbors: Sequence[int],
                     batch_size: int, seed: int, rank: int = 0,
                     world_size: int = 1) -> NeighborLoader:
    r"""The training loader of process ``rank``: a
    :class:`~torch_geometric.loader.NeighborLoader` over ``data`` whose batches are this
    rank's seed nodes (:class:`SeedBatchSampler`; call
    ``loader.batch_sampler.set_epoch(epoch)`` before each epoch), each with
    ``num_neighbors[k]`` neighbours sampled at hop :math:`k + 1` (with torch's RNG). Each
    batch is a :class:`~torch_geometric.data.Data` subgraph whose first
    ``batch.batch_size`` nodes are the seed nodes; ``batch.n_id`` maps its nodes to
    ``data``'s.

    Args:
        data (torch_geometric.data.Data): The graph, with its node features and labels.
        train_idx (torch.Tensor): The training nodes.
        num_neighbors (list of int): Neighbours sampled per node at each hop (:obj:`-1`:
            all).
        batch_size (int): Most seed nodes per batch.
        seed (int): The run's seed (draws each epoch's order).
        rank (int, optional): This process's rank. (default: :obj:`0`)
        world_size (int, optional): Number of processes. (default: :obj:`1`)
    """
    sampler = SeedBatchSampler(train_idx.numel(), batch_size, seed, rank, world_size)
    return neighbor_loader(data, num_neighbors, input_nodes=train_idx, batch_sampler=sampler)
