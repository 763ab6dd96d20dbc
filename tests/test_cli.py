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
