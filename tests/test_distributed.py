"""Data-parallel training with torch.distributed: two processes started by torchrun on
this machine (gloo) end with identical parameters, and match one process trained on the
same global batches."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gat_pyg.cli import main

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
import ddp_worker  # noqa: E402


def _torchrun(args, tmp_path, timeout=120):
    # One machine: rendezvous on a free local port, gloo over the loopback interface.
    env = dict(os.environ, OMP_NUM_THREADS='1', GLOO_SOCKET_IFNAME='lo',
               GAT_PYG_CACHE=str(tmp_path / 'cache'))
    command = [sys.executable, '-m', 'torch.distributed.run', '--standalone',
               '--nproc-per-node', '2', *args]
    try:
        return subprocess.run(command, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f'torchrun did not finish in {timeout} s; its stderr ends with:\n'
                    f'{(error.stderr or b"")[-3000:]!r}')


@pytest.fixture
def cora_root(shared_data, tmp_path):
    from torch_geometric.datasets import Planetoid
    root = tmp_path / 'Planetoid'
    shutil.copytree(shared_data / 'Planetoid' / 'Cora', root / 'Cora')
    Planetoid(str(root), 'Cora')  # processed here, not by two ranks at once
    return root


def test_two_ranks_stay_identical_and_match_one_process(cora_root, tmp_path):
    from torch_geometric.datasets import Planetoid

    from gat_pyg.minibatch import (epoch_seed_nodes, neighbor_loader, num_batches,
                                   split_into_batches)
    from gat_pyg.training import train_step

    done = _torchrun([str(TESTS / 'ddp_worker.py'), str(cora_root), str(tmp_path)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f'rank{r}.pt', weights_only=False) for r in (0, 1)]
    for name, value in ranks[0]['params'].items():
        assert torch.equal(value, ranks[1]['params'][name]), name

    # One process, each step on the union of the two ranks' batches of that step.
    data = Planetoid(str(cora_root), 'Cora')[0]
    model = ddp_worker.build_model(data.num_features, int(data.y.max()) + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    train_idx = data.train_mask.nonzero().view(-1)
    count = num_batches(train_idx.numel(), ddp_worker.BATCH_SIZE, world_size=2)
    assert count == 2  # 140 training nodes: 70 per rank, two batches of 35
    for epoch in range(1, ddp_worker.EPOCHS + 1):
        shares = [split_into_batches(epoch_seed_nodes(train_idx, epoch, ddp_worker.SEED, r, 2),
                                     count) for r in (0, 1)]
        losses = []
        for step in range(count):
            seeds = torch.cat([shares[0][step], shares[1][step]])
            batch = next(iter(neighbor_loader(data, ddp_worker.NUM_NEIGHBORS,
                                              input_nodes=seeds, batch_size=seeds.numel())))
            losses.append(train_step(model, optimizer, batch.x, batch.edge_index, batch.y,
                                     slice(0, batch.batch_size)))
        # Each rank's epoch loss is the mean over its seeds; equal shares average to ours.
        rank_mean = sum(r['losses'][epoch - 1] for r in ranks) / 2
        assert rank_mean == pytest.approx(sum(losses) / count, rel=1e-5)
    for name, value in model.named_parameters():
        torch.testing.assert_close(ranks[0]['params'][name].detach(), value.detach(),
                                   atol=1e-5, rtol=1e-4)


def test_train_command_with_ddp(shared_data, tmp_path):
    out = tmp_path / 'ddp.json'
    done = _torchrun(['-m', 'gat_pyg', 'train', '--dataset', 'Cora', '--root',
                      str(shared_data), '--loader', 'neighbor', '--batch-size', '32',
                      '--epochs', '2', '--ddp', '--quiet', '--out', str(out)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result['config']['loader'] == 'neighbor' and result['world_size'] == 2
    assert result['runs'][0]['epochs'] == 2
    assert done.stdout.count('test accuracy over 1 run(s)') == 1  # rank 0 reports alone


def test_ddp_without_torchrun_is_a_clear_error(shared_data, capsys, monkeypatch):
    for name in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(name, raising=False)
    assert main(['train', '--dataset', 'Cora', '--root', str(shared_data), '--loader',
                 'neighbor', '--ddp', '--epochs', '1']) == 2
    assert 'torchrun --nproc-per-node' in capsys.readouterr().err
