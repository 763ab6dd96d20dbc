"""Graph classification: stratified folds, the GraphGAT model, ``gat-pyg train --task graph``
(results, resume, errors) and the readout-attention figure."""
import json

import pytest
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.nn import GATConv as PyGGATConv

from gat_pyg.cli import main
from gat_pyg.graph_training import (cross_validation_splits, stratified_folds,
                                    stratified_holdout)
from gat_pyg.nn.models import GraphGAT

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


@pytest.fixture(autouse=True)
def _work_cache(tmp_path, monkeypatch):
    monkeypatch.setenv('GAT_PYG_CACHE', str(tmp_path / 'cache'))


# Folds ###########################################################################################

def _labels(counts):
    """Class ``c`` repeated ``counts[c]`` times, interleaved so that classes are not sorted."""
    labels = torch.cat([torch.full((n, ), c) for c, n in enumerate(counts)])
    return labels[torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(1))]


def test_stratified_folds_partition_and_keep_class_ratios():
    counts = (50, 31, 7)
    labels = _labels(counts)
    fold = stratified_folds(labels, 10, torch.Generator().manual_seed(0))
    assert fold.shape == labels.shape and set(fold.tolist()) == set(range(10))
    sizes = torch.bincount(fold, minlength=10)
    assert int(sizes.sum()) == labels.numel() and int(sizes.max() - sizes.min()) <= 1
    for cls, n in enumerate(counts):
        per_fold = torch.bincount(fold[labels == cls], minlength=10)
        assert set(per_fold.tolist()) <= {n // 10, -(-n // 10)}, (cls, per_fold)
    again = stratified_folds(labels, 10, torch.Generator().manual_seed(0))
    other = stratified_folds(labels, 10, torch.Generator().manual_seed(1))
    assert torch.equal(fold, again) and not torch.equal(fold, other)
    with pytest.raises(ValueError, match='into 1 folds'):
        stratified_folds(labels, 1, torch.Generator())


def test_stratified_holdout_takes_the_fraction_of_every_class():
    labels = _labels((120, 60, 20))
    held_out = stratified_holdout(labels, 0.1, torch.Generator().manual_seed(0))
    assert int(held_out.sum()) == 20
    for cls, n in enumerate((120, 60, 20)):
        assert abs(int(held_out[labels == cls].sum()) - n // 10) <= 1
    with pytest.raises(ValueError, match='val_fraction'):
        stratified_holdout(labels, 1.0, torch.Generator())


def test_cross_validation_splits_are_disjoint_and_cover_every_graph():
    labels = _labels((125, 63))  # MUTAG's classes
    splits = cross_validation_splits(labels, 10, 0.1, seed=3)
    tests = torch.cat([split.test for split in splits])
    assert torch.equal(tests.sort().values, torch.arange(labels.numel()))
    for split in splits:
        parts = [set(split.train.tolist()), set(split.val.tolist()), set(split.test.tolist())]
        assert sum(map(len, parts)) == labels.numel() == len(set.union(*parts))
        assert len(parts[1]) == (labels.numel() - len(parts[2])) // 10
        # The validation part keeps the class ratio of the training folds (within one).
        ratio = float((labels[split.val] == 1).float().mean())
        assert abs(ratio * split.val.numel() - 63 / 188 * split.val.numel()) <= 1.5
    again = cross_validation_splits(labels, 10, 0.1, seed=3)
    assert all(torch.equal(a.val, b.val) and torch.equal(a.test, b.test)
               for a, b in zip(splits, again))


# The model #######################################################################################

def _molecules(num_graphs=5, num_features=7, edge_dim=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    graphs = []
    for k in range(num_graphs):
        n = 4 + k
        ring = torch.arange(n)
        src = torch.cat([ring, (ring + 1) % n])
        dst = torch.cat([(ring + 1) % n, ring])
        graphs.append(Data(x=torch.randn(n, num_features, generator=generator),
                           edge_index=torch.stack([src, dst]),
                           edge_attr=torch.rand(2 * n, edge_dim, generator=generator),
                           y=torch.tensor([k % 2])))
    return Batch.from_data_list(graphs)


@pytest.mark.parametrize('readout', ['attention', 'mean'])
def test_model_with_both_readouts_and_edge_features(readout):
    batch = _molecules()
    torch.manual_seed(0)
    model = GraphGAT(7, 4, 3, num_layers=2, heads=2, readout=readout, edge_dim=4)
    logits = model(batch.x, batch.edge_index, batch.batch, batch.edge_attr, batch.num_graphs)
    assert logits.shape == (5, 3) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.convs[0].lin_edge is not None  # the edge features are used
    model.eval()
    with torch.no_grad():
        changed = model(batch.x, batch.edge_index, batch.batch, batch.edge_attr + 1.0)
        assert not torch.allclose(changed, model(batch.x, batch.edge_index, batch.batch,
                                                 batch.edge_attr))
    assert f"readout='{readout}'" in repr(model) and 'conv=GATConv' in repr(model)


def test_attention_readout_returns_beta_per_graph():
    batch = _molecules()
    model = GraphGAT(7, 4, 2, num_layers=2, heads=2, readout_heads=3, edge_dim=4).eval()
    logits, beta = model(batch.x, batch.edge_index, batch.batch, batch.edge_attr,
                         return_attention_weights=True)
    assert logits.shape == (5, 2) and beta.shape == (batch.num_nodes, 3)
    sums = torch.zeros(5, 3).index_add_(0, batch.batch, beta)
    torch.testing.assert_close(sums, torch.ones(5, 3))
    mean_model = GraphGAT(7, 4, 2, num_layers=2, readout='mean', edge_dim=4)
    with pytest.raises(ValueError, match='mean readout has no attention weights'):
        mean_model(batch.x, batch.edge_index, batch.batch, batch.edge_attr,
                   return_attention_weights=True)
    with pytest.raises(ValueError, match="Unknown readout 'max'"):
        GraphGAT(7, 4, 2, readout='max')


@pytest.mark.parametrize('readout', ['attention', 'mean'])
def test_pyg_layer_swapped_in_computes_the_same_function(readout):
    batch = _molecules()
    batch.x, batch.edge_attr = batch.x.double(), batch.edge_attr.double()
    ours = GraphGAT(7, 4, 2, num_layers=3, heads=2, readout=readout, edge_dim=4).double()
    theirs = GraphGAT(7, 4, 2, num_layers=3, heads=2, readout=readout, edge_dim=4,
                      conv=PyGGATConv).double()
    assert isinstance(theirs.convs[0], PyGGATConv)
    theirs.load_state_dict(ours.state_dict())
    ours.eval(), theirs.eval()
    args = (batch.x, batch.edge_index, batch.batch, batch.edge_attr)
    torch.testing.assert_close(ours(*args), theirs(*args))


def test_reset_parameters_reinitialises_every_layer():
    model = GraphGAT(7, 4, 2, num_layers=2, heads=2, edge_dim=4)
    before = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    model.reset_parameters()
    after = model.state_dict()
    changed = [k for k, v in before.items() if not torch.equal(v, after[k])]
    for name in ('convs.0.lin.weight', 'convs.1.att_src', 'classifier.lins.0.weight'):
        assert name in changed, name
    assert not model.pool.gate_nn.weight.any()  # the readout starts uniform


# Datasets ########################################################################################

def test_degree_features_and_featureless_datasets(shared_data):
    from gat_pyg.data import load_graph_dataset
    _, plain = load_graph_dataset('MUTAG', shared_data)
    _, with_degree = load_graph_dataset('MUTAG', shared_data, degree_features=True)
    assert plain.num_features == 7 and plain.num_edge_features == 4
    graph = with_degree[0]
    assert torch.equal(graph.x[:, :7], plain[0].x)
    degree = torch.bincount(graph.edge_index[0], minlength=graph.num_nodes)
    assert torch.equal(graph.x[:, 7:].argmax(-1), degree)
    _, imdb = load_graph_dataset('IMDB-BINARY', shared_data)
    assert len(imdb) == 1000 and imdb.num_features == 136  # one-hot degrees 0..135


def test_node_attributes_come_standardised_before_the_labels(shared_data):
    from gat_pyg.data import load_graph_dataset
    _, labels_only = load_graph_dataset('ENZYMES', shared_data)
    _, with_attributes = load_graph_dataset('ENZYMES', shared_data, node_attributes=True)
    assert labels_only.num_features == 3 and with_attributes.num_features == 18 + 3
    x = torch.cat([graph.x for graph in with_attributes])
    assert x[:, :18].mean(0).abs().max() < 1e-4
    assert torch.allclose(x[:, :18].std(0), torch.ones(18), atol=1e-4)
    assert torch.equal(x[:, 18:], torch.cat([graph.x for graph in labels_only]))
    raw = torch.tensor([[float(v) for v in line.split(',')] for line in (
        shared_data / 'TUDataset' / 'ENZYMES' / 'raw' / 'ENZYMES_node_attributes.txt'
    ).read_text().splitlines()[:5]])
    scale = (x[1, :18] - x[0, :18]) / (raw[1] - raw[0]).where(raw[1] != raw[0], torch.nan)
    assert (scale[~scale.isnan()] > 0).all()  # an affine, increasing map of the raw values


def test_cli_node_attributes_flag(tmp_path, shared_data):
    out = tmp_path / 'r.json'
    assert main(['train', '--task', 'graph', '--dataset', 'ENZYMES', '--root',
                 str(shared_data), '--folds', '2', '--epochs', '1', '--node-attributes',
                 '--quiet', '--out', str(out)]) == 0
    assert json.loads(out.read_text())['config']['node_attributes'] is True


def test_node_attributes_errors(shared_data, tmp_path):
    import shutil

    from gat_pyg.data import load_graph_dataset
    with pytest.raises(ValueError, match="'MUTAG' has no continuous node attributes"):
        load_graph_dataset('MUTAG', shared_data, node_attributes=True)
    raw = tmp_path / 'TUDataset' / 'ENZYMES' / 'raw'
    shutil.copytree(shared_data / 'TUDataset' / 'ENZYMES' / 'raw', raw)
    (raw / 'ENZYMES_node_attributes.txt').unlink()
    load_graph_dataset('ENZYMES', tmp_path)  # labels alone need no attribute file
    with pytest.raises(FileNotFoundError, match='ENZYMES_node_attributes.txt'):
        load_graph_dataset('ENZYMES', tmp_path, node_attributes=True)


# The command #####################################################################################

def _graph_flags(shared_data, *extra):
    return ['train', '--task', 'graph', '--dataset', 'MUTAG', '--root', str(shared_data),
            '--folds', '2', '--epochs', '2', '--quiet', *extra]


def test_cli_graph_task_writes_the_results_json(tmp_path, shared_data, capsys):
    out = tmp_path / 'results.json'
    assert main(_graph_flags(shared_data, '--out', str(out), '--readout', 'mean',
                             '--layer', 'pyg')) == 0
    result = json.loads(out.read_text())
    assert set(result) == {'config', 'folds', 'test_acc_mean', 'test_acc_std', 'versions',
                           'split'}
    assert [fold['fold'] for fold in result['folds']] == [0, 1]
    for fold in result['folds']:
        assert {'test_acc', 'val_acc', 'best_epoch', 'seconds'} <= set(fold)
        assert 0.0 <= fold['test_acc'] <= 1.0 and fold['best_epoch'] in (1, 2)
    accs = torch.tensor([fold['test_acc'] for fold in result['folds']], dtype=torch.float64)
    assert result['test_acc_mean'] == pytest.approx(float(accs.mean()))
    assert result['test_acc_std'] == pytest.approx(float(accs.std(unbiased=False)))
    config = result['config']
    assert (config['dataset'], config['readout'], config['layer'], config['folds'],
            config['epochs']) == ('MUTAG', 'mean', 'pyg', 2, 2)
    split = result['split']
    assert split['seed'] == 0 and len(split['test']) == len(split['val']) == 2
    assert sorted(split['test'][0] + split['test'][1]) == list(range(188))
    assert not set(split['val'][0]) & set(split['test'][0])
    assert set(result['versions']) == {'gat_pyg', 'torch', 'torch_geometric'}
    assert 'MUTAG [pyg, mean readout] test accuracy over 2 folds' in capsys.readouterr().out


def _fold_state(folder, fold):
    return torch.load(folder / f'fold-{fold}.pt', weights_only=True)


def test_resume_after_interruption_gives_identical_results(tmp_path, shared_data, capsys,
                                                           monkeypatch, interrupted_evaluate):
    """Interrupted (Ctrl-C) in epoch 5 of fold 1, its last checkpoint at epoch 4, and
    rerun with the same command: the same kept weights, histories and results as a run
    never interrupted, and the finished fold 0 is not trained again."""
    import gat_pyg.graph_training as graph_training
    flags = _graph_flags(shared_data, '--checkpoint-every', '2')
    flags[flags.index('--epochs') + 1] = '6'
    straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
    assert main(flags + ['--checkpoint', str(straight), '--out',
                         str(tmp_path / 'straight.json')]) == 0

    # Fold 0: 6 validations and its test; then fold 1, epoch 5.
    with interrupted_evaluate(graph_training, 7 + 5):
        assert main(flags + ['--checkpoint', str(resumed)]) == 130
    assert 'rerun the same command to resume' in capsys.readouterr().err
    partial = _fold_state(resumed, 1)
    assert partial['epoch'] == 4 and partial['result'] is None
    assert _fold_state(resumed, 0)['result'] is not None

    built = []
    real_build = graph_training.build_graph_model
    monkeypatch.setattr(graph_training, 'build_graph_model',
                        lambda *args: built.append(1) or real_build(*args))
    assert main(flags + ['--checkpoint', str(resumed), '--out',
                         str(tmp_path / 'resumed.json')]) == 0
    assert len(built) == 2  # fold 0 only reloaded, fold 1 resumed

    for fold in (0, 1):
        a, b = _fold_state(straight, fold), _fold_state(resumed, fold)
        for key, value in a['best']['state'].items():
            assert torch.equal(value, b['best']['state'][key]), (fold, key)
        for key, value in a['model'].items():
            assert torch.equal(value, b['model'][key]), (fold, key)
        assert a['history'] == b['history'] and a['epoch'] == b['epoch'] == 6
        assert a['result'] == {**b['result'], 'seconds': a['result']['seconds']}
    first, second = (json.loads((tmp_path / f'{name}.json').read_text())
                     for name in ('straight', 'resumed'))
    for result in (first, second):
        for fold in result['folds']:
            fold.pop('seconds')
    assert first == second


def test_evaluate_reloads_the_kept_model_of_every_fold(tmp_path, shared_data, capsys):
    folder = tmp_path / 'ck'
    assert main(_graph_flags(shared_data, '--checkpoint', str(folder), '--seed', '3',
                             '--out', str(tmp_path / 'train.json'))) == 0
    capsys.readouterr()
    out = tmp_path / 'eval.json'
    assert main(['evaluate', '--checkpoint', str(folder), '--root', str(shared_data),
                 '--out', str(out)]) == 0
    assert 'test accuracy over 2 folds' in capsys.readouterr().out
    trained = json.loads((tmp_path / 'train.json').read_text())['folds']
    evaluated = json.loads(out.read_text())['folds']
    assert [fold['fold'] for fold in evaluated] == [0, 1]
    for before, after in zip(trained, evaluated):
        assert after['test_acc'] == before['test_acc'] and after['val_acc'] == before['val_acc']
        assert after['val_loss'] == pytest.approx(before['val_loss'], rel=1e-6)


def test_checkpoint_of_other_settings_is_refused(tmp_path, shared_data, capsys):
    flags = _graph_flags(shared_data, '--checkpoint', str(tmp_path / 'ck'))
    assert main(flags) == 0
    assert main(flags + ['--lr', '0.02']) == 2
    assert 'other settings (lr differ)' in capsys.readouterr().err


def test_unknown_or_wrong_task_dataset_is_a_clear_error(shared_data, capsys):
    assert main(['train', '--task', 'graph', '--dataset', 'MUTAGEN', '--root',
                 str(shared_data)]) == 2
    assert "Unknown dataset 'MUTAGEN'" in capsys.readouterr().err
    assert main(['train', '--task', 'graph', '--dataset', 'Cora', '--root',
                 str(shared_data)]) == 2
    assert "'Cora' is a node-classification dataset: use --task node" in \
        capsys.readouterr().err
    assert main(['train', '--dataset', 'PROTEINS', '--root', str(shared_data)]) == 2
    assert "'PROTEINS' is a graph-classification dataset: use --task graph" in \
        capsys.readouterr().err


def test_missing_files_name_the_expected_path(tmp_path, capsys):
    assert main(['train', '--task', 'graph', '--dataset', 'PROTEINS', '--root',
                 str(tmp_path)]) == 2
    err = capsys.readouterr().err
    for part in ('A', 'graph_indicator', 'graph_labels', 'node_labels'):
        assert str(tmp_path / 'TUDataset' / 'PROTEINS' / 'raw' / f'PROTEINS_{part}.txt') in err


@pytest.mark.parametrize('flags,message', [
    (['--task', 'graph', '--runs', '2'], '--runs only applies to --task node'),
    (['--task', 'graph', '--patience', '5', '--plot', 'c.png'],
     '--patience, --plot only apply to --task node'),
    (['--task', 'graph', '--init', 'paper', '--dropout-per-head'],
     '--[no-]dropout-per-head, --init only apply to --task node'),
    (['--readout', 'mean'], '--readout only applies to --task graph'),
    (['--folds', '5'], '--folds only applies to --task graph'),
    (['--node-attributes'], '--node-attributes only applies to --task graph'),
    (['--task', 'graph', '--folds', '1'], 'expected an integer of at least 2'),
    (['--task', 'graph', '--readout', 'max'], "invalid choice: 'max'"),
    (['--task', 'graph', '--val-fraction', '1'], 'expected a fraction in (0, 1)'),
    (['--task', 'graph', '--readout', 'mean', '--attention-figure', 'a.png'],
     '--attention-figure needs --readout attention'),
    (['--task', 'hypergraph'], "invalid choice: 'hypergraph'")])
def test_flags_of_the_other_task_are_usage_errors(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(['train', '--dataset', 'MUTAG', *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_attention_figure_writes_a_png(tmp_path, shared_data, capsys):
    png = tmp_path / 'figure' / 'mutag.png'
    assert main(_graph_flags(shared_data, '--attention-figure', str(png))) == 0
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 20_000
    assert f'attention figure written to {png}' in capsys.readouterr().out


def test_readout_attention_of_a_trained_fold(shared_data):
    from gat_pyg.graph_training import (GraphTrainConfig, load_data, readout_attention,
                                        train_fold)
    config = GraphTrainConfig(dataset='MUTAG', folds=2, epochs=1)
    dataset = load_data(config, shared_data)
    split = cross_validation_splits(dataset.y, 2, 0.1, 0)[0]
    result, model = train_fold(config, dataset, split, 0, progress=False)
    graphs = [dataset[int(i)] for i in split.test[:4]]
    betas, predictions = readout_attention(model, graphs)
    assert [beta.numel() for beta in betas] == [graph.num_nodes for graph in graphs]
    for beta in betas:
        assert float(beta.sum()) == pytest.approx(1.0) and bool((beta > 0).all())
    assert len(predictions) == 4 and set(predictions) <= {0, 1}
    assert result.epochs == 1 and result.best_epoch == 1


def test_attention_figure_without_matplotlib_names_its_flag(tmp_path, monkeypatch, capsys):
    import builtins
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith('matplotlib'):
            raise ImportError('No module named matplotlib')
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, '__import__', no_matplotlib)
    assert main(['train', '--task', 'graph', '--dataset', 'MUTAG', '--root', str(tmp_path),
                 '--attention-figure', str(tmp_path / 'beta.png')]) == 2
    assert "--attention-figure needs matplotlib: pip install" in capsys.readouterr().err


def test_cli_graph_task_with_gatv2(tmp_path, shared_data, capsys):
    out = tmp_path / 'results.json'
    assert main(_graph_flags(shared_data, '--out', str(out), '--conv', 'gatv2')) == 0
    assert json.loads(out.read_text())['config']['conv'] == 'gatv2'
    assert 'MUTAG [ours gatv2, attention readout] test accuracy' in capsys.readouterr().out
