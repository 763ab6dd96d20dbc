"""Mini-batch training: our GATConv inside PyG's loaders, layer-wise inference, seed-node
sharding, ``gat-pyg train --loader neighbor`` (results, resume), the fixed splits and
ROC-AUC of the heterophilous graphs, and the error without a sampling backend."""
import json
import re

import pytest
import torch
import torch_geometric.typing
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader, NeighborLoader
from torch_geometric.nn import GATConv as PyGGATConv

from gat_pyg.cli import main
from gat_pyg.metrics import roc_auc
from gat_pyg.minibatch import (INSTALL_HINT, SeedBatchSampler, epoch_seed_nodes,
                               full_neighborhood_loader, num_batches,
                               require_neighbor_sampler, seed_node_loader)
from gat_pyg.nn import GATConv
from gat_pyg.nn.models import GAT


@pytest.fixture
def work_cache(tmp_path, monkeypatch):
    monkeypatch.setenv('GAT_PYG_CACHE', str(tmp_path / 'cache'))


def random_graph(num_nodes: int = 300, num_edges: int = 3000, num_features: int = 6,
                 seed: int = 0) -> Data:
    generator = torch.Generator().manual_seed(seed)
    return Data(x=torch.randn(num_nodes, num_features, generator=generator,
                              dtype=torch.float64),
                edge_index=torch.randint(0, num_nodes, (2, num_edges), generator=generator),
                y=torch.randint(0, 3, (num_nodes, ), generator=generator))


def layer_pair(in_channels, out_channels, **kwargs):
    """PyG's GATConv and ours with the same weights, in float64 and eval mode."""
    torch.manual_seed(1)
    pyg = PyGGATConv(in_channels, out_channels, **kwargs).double().eval()
    ours = GATConv(in_channels, out_channels, **kwargs).double().eval()
    ours.load_state_dict(pyg.state_dict(), strict=True)
    return pyg, ours


def outputs_and_grads(layer, x, edge_index, num_targets=None):
    """The layer's output on ``(x, edge_index)`` (bipartite from all nodes to the first
    ``num_targets``, if given) and the gradients of ``x`` and the parameters."""
    x = x.detach().clone().requires_grad_()
    layer.zero_grad()
    if num_targets is None:
        out = layer(x, edge_index)
    else:
        out = layer((x, x[:num_targets]), edge_index, size=(x.size(0), num_targets))
    out.backward(torch.linspace(-1.0, 1.0, out.numel(), dtype=out.dtype).view_as(out))
    return out, x.grad, {name: p.grad.clone() for name, p in layer.named_parameters()}


def assert_same(pyg_result, our_result):
    (pyg_out, pyg_x_grad, pyg_grads), (out, x_grad, grads) = pyg_result, our_result
    torch.testing.assert_close(out, pyg_out, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(x_grad, pyg_x_grad, atol=1e-10, rtol=1e-10)
    assert pyg_grads.keys() == grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, pyg_grads[name], atol=1e-10, rtol=1e-10)


# Our layer inside PyG's loaders ##############################################################

@pytest.mark.parametrize('residual', [False, True])
def test_gatconv_on_neighbor_loader_batches_matches_pyg(residual):
    """On sampled subgraphs (seed nodes first) and on their bipartite seed-node part, our
    layer gives PyG's outputs and gradients with the same weights."""
    data = random_graph()
    pyg, ours = layer_pair(6, 4, heads=3, residual=residual)
    torch.manual_seed(2)
    loader = NeighborLoader(data, [5, 5], batch_size=32, shuffle=True)
    batches = [batch for _, batch in zip(range(3), loader)]
    assert len(batches) == 3
    for batch in batches:
        assert batch.num_nodes > batch.batch_size and torch.equal(
            batch.n_id[:batch.batch_size], batch.input_id)
        # The sampled subgraph as one graph:
        assert_same(outputs_and_grads(pyg, batch.x, batch.edge_index),
                    outputs_and_grads(ours, batch.x, batch.edge_index))
        # Bipartite: every node to the seed nodes, over the edges that end at a seed.
        to_seeds = batch.edge_index[:, batch.edge_index[1] < batch.batch_size]
        pyg_result = outputs_and_grads(pyg, batch.x, to_seeds, batch.batch_size)
        assert pyg_result[0].shape == (batch.batch_size, 12)
        assert_same(pyg_result, outputs_and_grads(ours, batch.x, to_seeds, batch.batch_size))


def test_gatconv_on_dataloader_batches_matches_pyg():
    """On :class:`torch_geometric.loader.DataLoader` batches of small graphs (disjoint
    union, offset indices), our layer gives PyG's outputs and gradients."""
    graphs = [random_graph(num_nodes=5 + 3 * k, num_edges=4 * k + 2, seed=k)
              for k in range(10)]
    pyg, ours = layer_pair(6, 5, heads=2, concat=False)
    batches = list(DataLoader(graphs, batch_size=4, shuffle=False))
    assert [batch.num_graphs for batch in batches] == [4, 4, 2]
    for batch in batches:
        assert_same(outputs_and_grads(pyg, batch.x, batch.edge_index),
                    outputs_and_grads(ours, batch.x, batch.edge_index))


# Layer-wise inference ######################################################################

@pytest.mark.parametrize('residual', [False, True])
@pytest.mark.parametrize('conv', [GATConv, PyGGATConv], ids=['ours', 'pyg'])
def test_inference_equals_full_batch_eval(residual, conv):
    data = random_graph(num_nodes=500, num_edges=6000, num_features=12)
    data.x = data.x.float()
    torch.manual_seed(3)
    model = GAT(12, 8, 3, dropout=0.6, alpha=0.2, nheads=4, residual=residual,
                conv=conv).eval()
    full = model(data.x, data.edge_index)
    torch.testing.assert_close(model.inference(data.x, data.edge_index, batch_size=64),
                               full, atol=1e-5, rtol=1e-5)
    # Batches in any order, loaded once and reused (as the training loop does):
    batches = list(full_neighborhood_loader(data.edge_index, data.num_nodes, 100))[::-1]
    torch.testing.assert_close(model.inference(data.x, batches), full, atol=1e-5,
                               rtol=1e-5)


def test_inference_checks_mode_and_coverage():
    data = random_graph(num_nodes=100, num_edges=500)
    model = GAT(6, 4, 3, dropout=0.5, alpha=0.2, nheads=2).double()
    with pytest.raises(RuntimeError, match='eval'):
        model.inference(data.x, data.edge_index)
    model.eval()
    batches = list(full_neighborhood_loader(data.edge_index, data.num_nodes, 30))
    with pytest.raises(ValueError, match='exactly once .*30 missed'):
        model.inference(data.x, batches[1:])
    with pytest.raises(ValueError, match='10 repeated'):
        model.inference(data.x, batches + batches[-1:])


def test_full_neighborhood_loader_holds_every_edge_once():
    data = random_graph(num_nodes=200, num_edges=2000)
    batches = list(full_neighborhood_loader(data.edge_index, data.num_nodes, 64))
    assert [batch.batch_size for batch in batches] == [64, 64, 64, 8]
    edges = torch.cat([batch.n_id[batch.edge_index] for batch in batches], dim=1)
    assert all(bool((batch.edge_index[1] < batch.batch_size).all()) for batch in batches)
    key = lambda index: (index[0] * 1000 + index[1]).sort().values  # noqa: E731
    assert torch.equal(key(edges), key(data.edge_index))


# Seed nodes per epoch and rank ###############################################################

@pytest.mark.parametrize('world_size', [1, 2, 3, 4])
def test_seed_sharding_covers_train_nodes_once_per_epoch(world_size):
    train_idx = torch.randperm(2000, generator=torch.Generator().manual_seed(0))[:1037]
    for epoch in (1, 2):
        shares = [epoch_seed_nodes(train_idx, epoch, seed=7, rank=rank,
                                   world_size=world_size) for rank in range(world_size)]
        assert torch.equal(torch.cat(shares).sort().values, train_idx.sort().values)
        assert {share.numel() for share in shares} <= {1037 // world_size,
                                                       -(-1037 // world_size)}
        again = epoch_seed_nodes(train_idx, epoch, seed=7, rank=world_size - 1,
                                 world_size=world_size)
        assert torch.equal(again, shares[-1])  # deterministic
        # The batches: the same number on every rank, each at most batch_size nodes, and
        # together the rank's share in order.
        lengths = set()
        for rank, share in enumerate(shares):
            sampler = SeedBatchSampler(train_idx.numel(), 100, seed=7, rank=rank,
                                       world_size=world_size)
            sampler.set_epoch(epoch)
            batches = [train_idx[positions] for positions in sampler]
            assert len(batches) == len(sampler) == num_batches(1037, 100, world_size)
            assert max(batch.numel() for batch in batches) <= 100
            assert torch.equal(torch.cat(batches), share)
            lengths.add(len(batches))
        assert len(lengths) == 1
    first, second = (epoch_seed_nodes(train_idx, epoch, seed=7) for epoch in (1, 2))
    assert not torch.equal(first, second)  # a new order every epoch
    assert not torch.equal(first, epoch_seed_nodes(train_idx, 1, seed=8))


def test_seed_sharding_rejects_bad_arguments():
    with pytest.raises(ValueError, match='rank'):
        epoch_seed_nodes(torch.arange(10), 1, 0, rank=2, world_size=2)
    sampler = SeedBatchSampler(3, 1, seed=0, rank=1, world_size=2)
    with pytest.raises(RuntimeError, match='set_epoch'):
        list(sampler)
    sampler.set_epoch(1)  # 1 seed node on rank 1 cannot fill the 2 batches of rank 0
    with pytest.raises(ValueError, match='non-empty batches'):
        list(sampler)


def test_seed_node_loader_puts_the_epochs_seed_nodes_first():
    data = random_graph()
    train_idx = torch.arange(0, 300, 3)
    torch.manual_seed(0)
    loader = seed_node_loader(data, train_idx, [4, 4], batch_size=30, seed=5)
    loader.batch_sampler.set_epoch(3)
    seeds = torch.cat([batch.n_id[:batch.batch_size] for batch in loader])
    assert torch.equal(seeds, epoch_seed_nodes(train_idx, 3, seed=5))
    assert len(loader) == 4


# ROC-AUC #####################################################################################

def pairwise_roc_auc(scores, labels):
    pos, neg = scores[labels == 1], scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).double() + 0.5 * (diff == 0).double()).mean())


@pytest.mark.parametrize('seed', range(4))
def test_roc_auc_matches_the_pairwise_count_with_ties(seed):
    generator = torch.Generator().manual_seed(seed)
    labels = (torch.rand(300, generator=generator) < 0.3).long()
    # Few distinct values, so that many scores tie within and across classes.
    scores = torch.randint(0, 12, (300, ), generator=generator).float() + labels * 2.0
    assert roc_auc(scores, labels) == pytest.approx(pairwise_roc_auc(scores, labels),
                                                    abs=1e-12)
    log_probs = torch.stack([torch.zeros(300), scores], dim=1)
    assert roc_auc(log_probs, labels) == roc_auc(scores, labels)


def test_roc_auc_edge_cases():
    labels = torch.tensor([0, 0, 1, 1])
    assert roc_auc(torch.tensor([0.1, 0.2, 0.3, 0.4]), labels) == 1.0
    assert roc_auc(torch.tensor([0.4, 0.3, 0.2, 0.1]), labels) == 0.0
    assert roc_auc(torch.zeros(4), labels) == 0.5
    with pytest.raises(ValueError, match='both classes'):
        roc_auc(torch.rand(3), torch.ones(3, dtype=torch.long))
    with pytest.raises(ValueError, match='binary'):
        roc_auc(torch.rand(3), torch.tensor([0, 1, 2]))


# gat-pyg train --loader neighbor #############################################################

def test_cli_neighbor_loader_writes_results(tmp_path, shared_data, work_cache, capsys):
    out = tmp_path / 'r.json'
    assert main(['train', '--dataset', 'Cora', '--root', str(shared_data), '--loader',
                 'neighbor', '--num-neighbors', '5', '5', '--batch-size', '64',
                 '--epochs', '2', '--out', str(out), '--quiet']) == 0
    result = json.loads(out.read_text())
    assert set(result) == {'config', 'runs', 'test_acc_mean', 'test_acc_std', 'versions'}
    config = result['config']
    assert (config['loader'], config['num_neighbors'], config['batch_size']) == (
        'neighbor', [5, 5], 64)
    [run] = result['runs']
    assert run['epochs'] == 2 and run['metric'] == 'accuracy'
    assert run['test_score'] == run['test_acc'] and 0.0 < run['test_acc'] <= 1.0
    assert 'test accuracy over 1 run(s)' in capsys.readouterr().out


def test_neighbor_training_learns_and_resumes_identically(tmp_path, shared_data, work_cache,
                                                          interrupted_evaluate):
    """Cora in mini-batches of 50 seed nodes (3 per epoch): interrupted in epoch 9 (last
    checkpoint at 8) and rerun, it ends with the weights, history and metrics of an
    uninterrupted run, and it learns."""
    import gat_pyg.training as training
    flags = ['train', '--dataset', 'Cora', '--root', str(shared_data), '--loader',
             'neighbor', '--batch-size', '50', '--epochs', '12', '--checkpoint-every', '4',
             '--quiet']
    assert main(flags + ['--checkpoint', str(tmp_path / 'straight')]) == 0

    resumed = tmp_path / 'resumed'
    with interrupted_evaluate(training, 9):
        assert main(flags + ['--checkpoint', str(resumed)]) == 130
    partial = torch.load(resumed / 'run-seed0.pt', weights_only=True)
    assert partial['epoch'] == 8 and partial['result'] is None
    assert main(flags + ['--checkpoint', str(resumed)]) == 0

    a, b = (torch.load(folder / 'run-seed0.pt', weights_only=True)
            for folder in (tmp_path / 'straight', resumed))
    for key, value in a['model'].items():
        assert torch.equal(value, b['model'][key]), key
    assert a['history'] == b['history'] and a['epoch'] == b['epoch'] == 12
    assert a['result'] == {**b['result'], 'seconds': a['result']['seconds']}
    assert a['history']['train_loss'][-1] < a['history']['train_loss'][0]
    assert a['result']['val_acc'] > 0.5


def test_tolokers_fixed_split_and_roc_auc(tmp_path, shared_data, work_cache):
    from gat_pyg.cli import _load_data
    from gat_pyg.data import load_dataset
    from gat_pyg.training import TrainConfig
    config = TrainConfig.for_dataset('Tolokers', split=3)
    assert (config.metric, config.residual, config.normalize_features) == (
        'roc_auc', True, False)
    data, num_classes = _load_data(config, shared_data, 'Tolokers')
    _, raw = load_dataset('Tolokers', shared_data)
    assert raw.train_mask.shape == (11758, 10) and num_classes == 2
    for name in ('train_mask', 'val_mask', 'test_mask'):
        assert torch.equal(data[name], raw[name][:, 3])
    assert int(data.train_mask.sum()) == 5879 and data.edge_index.size(1) == 1038000

    out = tmp_path / 'r.json'
    assert main(['train', '--dataset', 'Tolokers', '--root', str(shared_data), '--split',
                 '3', '--epochs', '1', '--hidden', '2', '--heads', '1', '--out', str(out),
                 '--quiet']) == 0
    result = json.loads(out.read_text())
    assert result['metric'] == 'roc_auc' and result['config']['split'] == 3
    [run] = result['runs']
    assert run['metric'] == 'roc_auc' and 0.0 <= run['test_score'] <= 1.0
    assert result['test_score_mean'] == run['test_score']


@pytest.mark.parametrize('dataset,split,message', [
    ('Tolokers', '10', r'--split must lie in 0\.\.9'),
    ('Cora', '0', 'has a single split')])
def test_bad_split_is_a_clear_error(dataset, split, message, shared_data, work_cache,
                                    capsys):
    assert main(['train', '--dataset', dataset, '--root', str(shared_data), '--split',
                 split, '--epochs', '1']) == 2
    assert re.search(message, capsys.readouterr().err)


# Without a sampling backend ##################################################################

def test_missing_sampler_backend_says_how_to_install(monkeypatch, shared_data, work_cache,
                                                     capsys):
    monkeypatch.setattr(torch_geometric.typing, 'WITH_TORCH_SPARSE', False)
    monkeypatch.setattr(torch_geometric.typing, 'WITH_PYG_LIB', False)
    with pytest.raises(ImportError) as error:
        require_neighbor_sampler()
    assert INSTALL_HINT in str(error.value)
    assert 'MAX_JOBS=2 python -m pip install --no-build-isolation torch_scatter torch_sparse' \
        in str(error.value) and 'README' in str(error.value)
    data = random_graph(num_nodes=20, num_edges=50)
    with pytest.raises(ImportError, match='torch_sparse'):
        GAT(6, 2, 3, dropout=0.0, alpha=0.2, nheads=1).double().eval().inference(
            data.x, data.edge_index)
    assert main(['train', '--dataset', 'Cora', '--root', str(shared_data), '--loader',
                 'neighbor', '--epochs', '1', '--quiet']) == 2
    assert 'pip install --no-build-isolation torch_scatter torch_sparse' in \
        capsys.readouterr().err
    # One backend is enough:
    monkeypatch.setattr(torch_geometric.typing, 'WITH_PYG_LIB', True)
    require_neighbor_sampler()


def test_checkpoints_from_before_other_metrics_still_load(tmp_path, shared_data, work_cache,
                                                         monkeypatch):
    """A finished run saved when accuracy was the only score (and before the settings added
    since) is reused, not retrained, and reports the same results."""
    import gat_pyg.training as training
    flags = ['train', '--dataset', 'Cora', '--root', str(shared_data), '--epochs', '3',
             '--checkpoint', str(tmp_path / 'ck'), '--quiet']
    assert main(flags + ['--out', str(tmp_path / 'new.json')]) == 0
    path = tmp_path / 'ck' / 'run-seed0.pt'
    state = torch.load(path, weights_only=True)
    state['stopping']['best_acc'] = state['stopping'].pop('best_score')
    for history in (state['history'], state['result']['history']):
        history['val_acc'] = history.pop('val_score')
    for key in ('metric', 'test_score', 'val_score'):
        del state['result'][key]
    for key in ('metric', 'loader', 'num_neighbors', 'batch_size', 'eval_batch_size'):
        del state['config'][key]
    torch.save(state, path)
    monkeypatch.setattr(training, 'build_model', lambda *args: pytest.fail('retrained'))
    assert main(flags + ['--out', str(tmp_path / 'old.json')]) == 0
    new, old = (json.loads((tmp_path / name).read_text())['runs'][0]
                for name in ('new.json', 'old.json'))
    assert old == new
