"""One rank of the data-parallel test (tests/test_distributed.py), started by torchrun:
trains the GAT on Cora's training nodes for a few mini-batch epochs with our library's
seed sharding and DistributedDataParallel, then writes this rank's epoch losses and final
parameters to ``<out>/rank<R>.pt``.

    torchrun --nproc-per-node 2 tests/ddp_worker.py <Planetoid root> <out dir>
"""
import sys
from pathlib import Path

import torch
from torch_geometric.datasets import Planetoid

from gat_pyg.distributed import init_distributed, shutdown, wrap_model
from gat_pyg.training import neighbor_epoch
from gat_pyg.minibatch import seed_node_loader

# Shared with the single-process replay in tests/test_distributed.py.
SEED, EPOCHS, BATCH_SIZE, NUM_NEIGHBORS = 7, 2, 35, [-1, -1]


def build_model(num_features: int, num_classes: int) -> torch.nn.Module:
    from gat_pyg.nn.models import GAT
    torch.manual_seed(SEED)
    # No dropout: the only difference from one process must be where the sums happen.
    return GAT(num_features, 8, num_classes, dropout=0.0, alpha=0.2, nheads=8)


def main(root: str, out: str) -> None:
    context = init_distributed()
    data = Planetoid(root, 'Cora')[0]
    model = build_model(data.num_features, int(data.y.max()) + 1)
    replica = wrap_model(model, context)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    loader = seed_node_loader(data, data.train_mask.nonzero().view(-1), NUM_NEIGHBORS,
                              BATCH_SIZE, SEED, context.rank, context.world_size)
    losses = [neighbor_epoch(replica, optimizer, loader, epoch)
              for epoch in range(1, EPOCHS + 1)]
    torch.save({'losses': losses, 'params': dict(model.named_parameters())},
               Path(out) / f'rank{context.rank}.pt')
    shutdown()


if __name__ == '__main__':
    main(*sys.argv[1:3])
