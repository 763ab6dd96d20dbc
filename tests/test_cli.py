import json
import subprocess
import sys

import pytest

from gat_pyg.cli import main


@pytest.fixture(autouse=True)
def _work_cache(tmp_path, monkeypatch):
    monkeypatch.setenv('GAT_PYG_CACHE', str(tmp_path / 'cache'))


def test_train_writes_results_json(tmp_path, shared_data, capsys):
    out = tmp_path / 'results.json'
    code = main(['train', '--dataset', 'Cora', '--root', str(shared_data), '--epochs', '3',
                 '--runs', '2', '--seed', '5', '--out', str(out), '--quiet'])
    assert code == 0
    result = json.loads(out.read_text())
    assert set(result) == {'config', 'runs', 'test_acc_mean', 'test_acc_std', 'versions'}
    assert [run['seed'] for run in result['runs']] == [5, 6]
    for run in result['runs']:
        assert {'seed', 'test_acc', 'val_acc', 'epochs', 'seconds'} <= set(run)
        assert 0.0 <= run['test_acc'] <= 1.0 and 0.0 <= run['val_acc'] <= 1.0
        assert run['epochs'] == 3
    assert result['config']['dataset'] == 'Cora' and result['config']['lr'] == 0.005
    assert set(result['versions']) == {'gat_pyg', 'torch', 'torch_geometric'}
    assert 'test accuracy over 2 run(s)' in capsys.readouterr().out


def test_pubmed_recipe_and_overrides():
    from gat_pyg.training import TrainConfig
    config = TrainConfig.for_dataset('PubMed', lr=0.02, hidden=None)
    assert (config.out_heads, config.lr, config.weight_decay, config.hidden) == (8, 0.02,
                                                                                 1e-3, 8)


@pytest.mark.parametrize('dataset,flag,normalized', [
    ('Cora', None, True), ('Cora', '--no-normalize-features', False),
    ('PubMed', None, False), ('PubMed', '--normalize-features', True)])
def test_feature_normalisation_default_and_flags(dataset, flag, normalized, monkeypatch):
    import gat_pyg.cli as cli
    seen = {}

    def stop(config, *args, **kwargs):
        seen['config'] = config
        raise ValueError('stop before loading data')
    monkeypatch.setattr(cli, '_load_data', stop)
    assert main(['train', '--dataset', dataset] + ([flag] if flag else [])) == 2
    assert seen['config'].normalize_features is normalized


def test_dropout_per_head_flag(tmp_path, shared_data, capsys):
    out = tmp_path / 'r.json'
    assert main(['train', '--dataset', 'Cora', '--root', str(shared_data), '--epochs', '2',
                 '--dropout-per-head', '--out', str(out), '--quiet']) == 0
    assert json.loads(out.read_text())['config']['dropout_per_head'] is True
    assert main(['train', '--dataset', 'Cora', '--residual', '--dropout-per-head']) == 2
    assert '--dropout-per-head does not go with a residual' in capsys.readouterr().err


def test_pyg_layer_and_random_split(tmp_path, shared_data):
    out = tmp_path / 'r.json'
    assert main(['train', '--dataset', 'Cora_ML', '--root', str(shared_data), '--epochs',
                 '2', '--layer', 'pyg', '--split-seed', '3', '--out', str(out),
                 '--quiet']) == 0
    config = json.loads(out.read_text())['config']
    assert config['layer'] == 'pyg' and config['split_seed'] == 3


def test_unknown_dataset_is_a_clear_error(capsys, shared_data):
    assert main(['train', '--dataset', 'Kora', '--root', str(shared_data)]) == 2
    assert "Unknown dataset 'Kora'" in capsys.readouterr().err


def test_missing_files_name_the_expected_path(tmp_path, capsys):
    assert main(['train', '--dataset', 'CiteSeer', '--root', str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / 'Planetoid' / 'CiteSeer' / 'raw' / 'ind.citeseer.x') in err


@pytest.mark.parametrize('flags', [['--dropout', '1.5'], ['--runs', '0'], ['--lr', '-1'],
                                   ['--layer', 'dgl'], ['--epochs', 'ten']])
def test_invalid_flags_exit_with_usage_error(flags, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(['train', '--dataset', 'Cora', *flags])
    assert exit_info.value.code == 2
    assert 'error' in capsys.readouterr().err


def test_module_entry_point():
    result = subprocess.run([sys.executable, '-m', 'gat_pyg', 'train', '--help'],
                            capture_output=True, text=True, check=True)
    assert '--dataset' in result.stdout and '--layer' in result.stdout


# Checkpoints, resume, evaluate, plot ###########################################################

def _final_state(folder, seed=0):
    import torch
    return torch.load(folder / f'run-seed{seed}.pt', weights_only=True)


def test_resume_after_interruption_gives_identical_weights(tmp_path, shared_data, capsys,
                                                           interrupted_evaluate):
    """An interrupted run (Ctrl-C in epoch 23, last checkpoint at 20), rerun with the same
    command, ends with the same kept weights, metrics and history as a run never
    interrupted."""
    import torch

    import gat_pyg.training as training
    flags = ['train', '--dataset', 'Cora', '--root', str(shared_data), '--epochs', '40',
             '--patience', '100', '--checkpoint-every', '5', '--quiet']
    assert main(flags + ['--checkpoint', str(tmp_path / 'straight')]) == 0

    resumed = tmp_path / 'resumed'
    with interrupted_evaluate(training, 23):
        assert main(flags + ['--checkpoint', str(resumed)]) == 130
    assert 'rerun the same command to resume' in capsys.readouterr().err
    assert _final_state(resumed)['epoch'] == 20 and _final_state(resumed)['result'] is None
    assert main(flags + ['--checkpoint', str(resumed)]) == 0

    a, b = _final_state(tmp_path / 'straight'), _final_state(resumed)
    for key, value in a['stopping']['best_state'].items():
        assert torch.equal(value, b['stopping']['best_state'][key]), key
    for key, value in a['model'].items():
        assert torch.equal(value, b['model'][key]), key
    assert a['history'] == b['history'] and a['epoch'] == b['epoch'] == 40
    for key in ('test_acc', 'val_acc', 'val_loss', 'epochs', 'best_epoch'):
        assert a['result'][key] == b['result'][key], key


def test_finished_runs_are_not_trained_again(tmp_path, shared_data, capsys, monkeypatch):
    import gat_pyg.training as training
    flags = ['train', '--dataset', 'Cora', '--root', str(shared_data), '--epochs', '3',
             '--checkpoint', str(tmp_path / 'ck'), '--quiet']
    assert main(flags) == 0
    first = capsys.readouterr().out
    monkeypatch.setattr(training, 'build_model', lambda *a: pytest.fail('retrained'))
    assert main(flags) == 0
    first_line = capsys.readouterr().out.splitlines()[0]
    assert first_line.split('(')[0] == first.splitlines()[0].split('(')[0]


def test_checkpoint_of_other_settings_is_refused(tmp_path, shared_data, capsys):
    base = ['train', '--dataset', 'Cora', '--root', str(shared_data), '--epochs', '3',
            '--checkpoint', str(tmp_path / 'ck'), '--quiet']
    assert main(base) == 0
    assert main(base + ['--lr', '0.01']) == 2
    assert 'other settings (lr differ)' in capsys.readouterr().err


def test_checkpoint_with_a_setting_this_version_lacks_names_it(tmp_path, shared_data, capsys):
    import torch
    base = ['train', '--dataset', 'Cora', '--root', str(shared_data), '--epochs', '2',
            '--checkpoint', str(tmp_path / 'ck'), '--quiet']
    assert main(base) == 0
    path = tmp_path / 'ck' / 'run-seed0.pt'
    state = torch.load(path, weights_only=True)
    state['config']['retired_option'] = 0.5  # e.g. written by another version
    torch.save(state, path)
    assert main(base) == 2
    assert 'other settings (retired_option differ)' in capsys.readouterr().err


def test_evaluate_reloads_the_kept_models(tmp_path, shared_data, capsys):
    folder = tmp_path / 'ck'
    assert main(['train', '--dataset', 'Cora', '--root', str(shared_data), '--epochs', '15',
                 '--runs', '2', '--checkpoint', str(folder), '--out',
                 str(tmp_path / 'train.json'), '--quiet']) == 0
    capsys.readouterr()
    out = tmp_path / 'eval.json'
    assert main(['evaluate', '--checkpoint', str(folder), '--root', str(shared_data),
                 '--out', str(out)]) == 0
    assert 'test accuracy over 2 run(s)' in capsys.readouterr().out
    trained = {run['seed']: run
               for run in json.loads((tmp_path / 'train.json').read_text())['runs']}
    evaluated = json.loads(out.read_text())['runs']
    assert sorted(run['seed'] for run in evaluated) == [0, 1]
    for run in evaluated:
        assert run['test_acc'] == trained[run['seed']]['test_acc']
        assert run['val_acc'] == trained[run['seed']]['val_acc']


def test_evaluate_without_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main(['evaluate', '--checkpoint', str(tmp_path / 'none')]) == 2
    assert 'No checkpoint at' in capsys.readouterr().err


def test_plot_writes_a_png(tmp_path, shared_data):
    png = tmp_path / 'curves.png'
    assert main(['train', '--dataset', 'Cora', '--root', str(shared_data), '--epochs', '4',
                 '--runs', '2', '--plot', str(png), '--quiet']) == 0
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and png.stat().st_size > 10_000


def test_random_split_is_saved_with_the_results(tmp_path, shared_data):
    out = tmp_path / 'r.json'
    assert main(['train', '--dataset', 'Photo', '--root', str(shared_data), '--epochs', '2',
                 '--split-seed', '4', '--out', str(out), '--quiet']) == 0
    split = json.loads(out.read_text())['split']
    assert split['seed'] == 4 and len(split['train']) == 8 * 20 and len(split['val']) == 8 * 30
    assert not set(split['train']) & set(split['val'])


def test_early_stopping_follows_the_papers_rule():
    import torch

    from gat_pyg.training import EarlyStopping
    model = torch.nn.Linear(1, 1)
    stop = EarlyStopping(patience=2)
    # (val_score, val_loss): kept only where both are at least as good as the best so far.
    history = [(0.5, 1.0), (0.6, 1.1), (0.55, 0.9), (0.6, 0.9), (0.5, 1.2), (0.59, 0.95)]
    stops = [stop.step(epoch, acc, loss, model) for epoch, (acc, loss) in
             enumerate(history, 1)]
    assert stops == [False, False, False, False, False, True]
    assert stop.best_epoch == 4 and (stop.best_score, stop.best_loss) == (0.6, 0.9)


def test_input_dropout_keeps_zeros_and_the_scale():
    import torch

    from gat_pyg.nn import input_dropout
    torch.manual_seed(0)
    x = (torch.rand(400, 300) < 0.05).float() * torch.rand(400, 300)
    dropped = input_dropout(x, 0.6, training=True)
    assert torch.equal(dropped[x == 0], torch.zeros_like(dropped[x == 0]))
    kept = dropped[x != 0] != 0
    assert abs(kept.float().mean().item() - 0.4) < 0.03
    torch.testing.assert_close(dropped[x != 0][kept], x[x != 0][kept] / 0.4)
    assert input_dropout(x, 0.6, training=False) is x
    dense = torch.rand(50, 40) + 0.1
    assert abs((input_dropout(dense, 0.5) != 0).float().mean().item() - 0.5) < 0.1


# The synthetic dataset ########################################################################

def test_synthetic_graph_trains_evaluates_and_records_its_arguments(tmp_path, capsys):
    out, folder = tmp_path / 'r.json', tmp_path / 'ck'
    assert main(['train', '--dataset', 'synthetic', '--nodes', '3000', '--edges', '60000',
                 '--features', '32', '--classes', '4', '--graph-seed', '7', '--epochs', '40',
                 '--checkpoint', str(folder), '--out', str(out), '--quiet']) == 0
    result = json.loads(out.read_text())
    config = result['config']
    assert config['synthetic'] == {'num_nodes': 3000, 'num_edges': 60000, 'num_features': 32,
                                   'num_classes': 4, 'seed': 7}
    assert config['normalize_features'] is False and 'split' not in result
    run = result['runs'][0]
    assert run['epochs'] == 40
    assert run['test_acc'] > 0.5  # chance is 0.25: the GAT learns the planted classes
    capsys.readouterr()
    evaluated = tmp_path / 'eval.json'
    assert main(['evaluate', '--checkpoint', str(folder), '--out', str(evaluated)]) == 0
    assert json.loads(evaluated.read_text())['runs'][0]['test_acc'] == run['test_acc']


def test_synthetic_recipe_defaults():
    from gat_pyg.training import SYNTHETIC_EPOCHS, TrainConfig
    config = TrainConfig.for_dataset('synthetic', synthetic={'num_nodes': 10, 'num_edges': 0})
    assert (config.heads, config.hidden, config.epochs, config.normalize_features) == (
        8, 8, SYNTHETIC_EPOCHS, False)
    with pytest.raises(ValueError, match='--nodes and --edges'):
        TrainConfig.for_dataset('synthetic')


@pytest.mark.parametrize('flags,message', [
    (['--dataset', 'synthetic', '--nodes', '100'], 'needs --nodes and --edges'),
    (['--dataset', 'synthetic', '--nodes', '100', '--edges', '301'], 'expected an even'),
    (['--dataset', 'synthetic', '--nodes', '100', '--edges', '300', '--split-seed', '1'],
     '--split-seed does not apply to --dataset synthetic'),
    (['--dataset', 'Cora', '--nodes', '100', '--edges', '300'],
     '--nodes, --edges only apply to --dataset synthetic'),
    (['--task', 'graph', '--dataset', 'MUTAG', '--graph-seed', '1'],
     '--graph-seed only applies to --task node'),
])
def test_synthetic_flags_are_checked(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(['train', *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_synthetic_generator_errors_are_reported(capsys):
    assert main(['train', '--dataset', 'synthetic', '--nodes', '10', '--edges', '4']) == 2
    assert "'num_nodes' must be at least 2 * num_classes" in capsys.readouterr().err


@pytest.mark.parametrize('layer', ['ours', 'pyg'])
def test_conv_gatv2_trains_on_either_layer(layer, tmp_path, shared_data, capsys):
    out = tmp_path / 'r.json'
    assert main(['train', '--dataset', 'Cora', '--root', str(shared_data), '--epochs', '2',
                 '--conv', 'gatv2', '--layer', layer, '--out', str(out), '--quiet']) == 0
    result = json.loads(out.read_text())
    assert (result['config']['conv'], result['config']['layer']) == ('gatv2', layer)
    assert f'Cora [{layer} gatv2] test accuracy over 1 run(s)' in capsys.readouterr().out
    assert main(['train', '--dataset', 'Cora', '--conv', 'gatv2', '--init', 'paper']) == 2
    assert "--init paper and --dropout-per-head are GAT's" in capsys.readouterr().err
