"""The ``gat-pyg`` command (also ``python -m gat_pyg``)."""
import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from gat_pyg.data import dataset_names, default_root, get_spec, load_dataset, random_split
from gat_pyg.training import (TrainConfig, build_model, evaluate, load_checkpoint,
                              prepare_data, summarize, train_run)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'expected a positive integer, got {text}')
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f'expected a probability in [0, 1), got {text}')
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0.0:
        raise argparse.ArgumentTypeError(f'expected a non-negative number, got {text}')
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='gat-pyg', description=__doc__)
    commands = parser.add_subparsers(dest='command', required=True)

    train = commands.add_parser(
        'train', help='train a GAT on a node-classification dataset',
        description='Trains a 2-layer GAT full-batch with the GAT paper\'s recipe and '
        'early stopping. Every recipe default can be overridden by a flag.')
    train.add_argument('--dataset', required=True,
                       help=f"one of: {', '.join(dataset_names())}")
    train.add_argument('--root', type=Path, default=None,
                       help=f'folder holding the datasets in PyG layout (default: '
                       f'$GAT_PYG_DATA, else {default_root()})')
    train.add_argument('--layer', choices=('ours', 'pyg'), default='ours',
                       help="'ours' (gat_pyg.nn.GATConv) or 'pyg' "
                       "(torch_geometric.nn.GATConv)")
    train.add_argument('--runs', type=_positive_int, default=1,
                       help='repeat with seeds S..S+K-1 (default 1)')
    train.add_argument('--seed', type=int, default=0, help='first seed (default 0)')
    train.add_argument('--epochs', type=_positive_int, default=None,
                       help='maximum epochs (default 100000)')
    train.add_argument('--patience', type=_positive_int, default=None,
                       help='early-stopping patience (default 100)')
    train.add_argument('--hidden', type=_positive_int, default=None,
                       help='hidden channels per head (default 8)')
    train.add_argument('--heads', type=_positive_int, default=None,
                       help='hidden heads (default 8)')
    train.add_argument('--out-heads', type=_positive_int, default=None,
                       help='output heads, averaged (default 1; PubMed 8)')
    train.add_argument('--dropout', type=_probability, default=None,
                       help='dropout on inputs and attention (default 0.6)')
    train.add_argument('--lr', type=_non_negative_float, default=None,
                       help='Adam learning rate (default 0.005; PubMed 0.01)')
    train.add_argument('--weight-decay', type=_non_negative_float, default=None,
                       help='L2 penalty (default 5e-4; PubMed 1e-3)')
    train.add_argument('--split-seed', type=int, default=0,
                       help='seed of the random 20/30-per-class split for datasets '
                       'without a public one (default 0)')
    train.add_argument('--no-normalize-features', dest='normalize_features',
                       action='store_false', default=None,
                       help='keep the raw features (default: row-normalised, as in the paper)')
    train.add_argument('--out', type=Path, default=None, help='write results as JSON')
    train.add_argument('--checkpoint', type=Path, default=None,
                       help='folder for resumable checkpoints (one file per seed); rerunning '
                       'the same command resumes an interrupted run and skips finished ones')
    train.add_argument('--checkpoint-every', type=_positive_int, default=10,
                       help='epochs between checkpoints (default 10)')
    train.add_argument('--plot', type=Path, default=None,
                       help="write training/validation curves as a PNG (needs matplotlib: "
                       "pip install 'gat-pyg[plot]')")
    train.add_argument('--quiet', action='store_true',
                       help='no progress bars; one log line per run')

    evaluate = commands.add_parser(
        'evaluate', help='reload trained models from a checkpoint folder and report metrics',
        description='Rebuilds the model of every finished run in a --checkpoint folder of '
        '`gat-pyg train`, reloads its kept weights and reports loss and accuracy on the '
        'train/val/test splits.')
    evaluate.add_argument('--checkpoint', type=Path, required=True,
                          help='a checkpoint folder, or one run-seed<S>.pt file in it')
    evaluate.add_argument('--root', type=Path, default=None,
                          help='folder holding the datasets (as for train)')
    evaluate.add_argument('--out', type=Path, default=None, help='write metrics as JSON')
    return parser


def _load_data(config: TrainConfig, root: Optional[Path], dataset: str):
    """The dataset of ``config`` with its split and preprocessing, and its class count."""
    spec = get_spec(dataset)
    _, data = load_dataset(spec.name if spec.family != 'CitationFull' else dataset, root)
    if config.split_seed is not None:
        data = random_split(data, config.split_seed)
    return prepare_data(config, data), int(data.y.max()) + 1


def train_command(args: argparse.Namespace) -> int:
    spec = get_spec(args.dataset)
    config = TrainConfig.for_dataset(
        spec.name, layer=args.layer, hidden=args.hidden, heads=args.heads,
        out_heads=args.out_heads, dropout=args.dropout, lr=args.lr,
        weight_decay=args.weight_decay, epochs=args.epochs, patience=args.patience,
        normalize_features=args.normalize_features,
        split_seed=None if spec.public_split else args.split_seed)
    if args.plot is not None:
        from gat_pyg.plotting import require_matplotlib
        require_matplotlib()  # fail now, not after training
    data, num_classes = _load_data(config, args.root, args.dataset)

    runs = []
    for seed in range(args.seed, args.seed + args.runs):
        try:
            run = train_run(config, data, num_classes, seed, progress=not args.quiet,
                            checkpoint=args.checkpoint,
                            checkpoint_every=args.checkpoint_every)
        except KeyboardInterrupt:
            where = (f'; rerun the same command to resume from {args.checkpoint}'
                     if args.checkpoint is not None else '')
            print(f'gat-pyg: interrupted{where}', file=sys.stderr)
            return 130
        runs.append(run)
        print(f'{spec.name} [{config.layer}] seed {seed}: test_acc={run.test_acc:.4f} '
              f'val_acc={run.val_acc:.4f} epochs={run.epochs} ({run.seconds:.1f}s)',
              flush=True)
    split = None
    if config.split_seed is not None:
        split = {'seed': config.split_seed, 'train_per_class': 20, 'val_per_class': 30,
                 'train': data.train_mask.nonzero().view(-1).tolist(),
                 'val': data.val_mask.nonzero().view(-1).tolist(),
                 'num_test': int(data.test_mask.sum())}
    summary = summarize(config, runs, split)
    print(f"{spec.name} [{config.layer}] test accuracy over {len(runs)} run(s): "
          f"{100 * summary['test_acc_mean']:.1f} +- {100 * summary['test_acc_std']:.1f}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2) + '\n')
    if args.plot is not None:
        from gat_pyg.plotting import plot_curves
        plot_curves(runs, args.plot, title=f'{spec.name} [{config.layer}]')
        print(f'curves written to {args.plot}')
    return 0


def evaluate_command(args: argparse.Namespace) -> int:
    path = args.checkpoint
    files = sorted(path.glob('run-seed*.pt')) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise FileNotFoundError(f"No checkpoint at '{path}' (expected a folder of "
                                f"run-seed<S>.pt files written by 'gat-pyg train "
                                f"--checkpoint', or one such file)")
    results, loaded = [], {}
    for file in files:
        state = load_checkpoint(file)
        if state['result'] is None:
            print(f"{file.name}: unfinished (epoch {state['epoch']}); resume it with "
                  f"'gat-pyg train ... --checkpoint {file.parent}'")
            continue
        config = TrainConfig(**state['config'])
        data_key = (config.dataset, config.split_seed, config.normalize_features)
        if data_key not in loaded:  # the runs of one folder share their data
            loaded[data_key] = _load_data(config, args.root, config.dataset)
        data, num_classes = loaded[data_key]
        model = build_model(config, data.num_features, num_classes)
        model.load_state_dict(state['stopping']['best_state'])
        metrics = evaluate(model, data)
        results.append({'seed': state['seed'], **metrics})
        print(f"{config.dataset} [{config.layer}] seed {state['seed']}: "
              + ' '.join(f'{k}={v:.4f}' for k, v in metrics.items()))
    if not results:
        raise ValueError(f"No finished run in '{path}'")
    if len(results) > 1:
        accs = [r['test_acc'] for r in results]
        mean = sum(accs) / len(accs)
        std = (sum((a - mean)**2 for a in accs) / len(accs))**0.5
        print(f'test accuracy over {len(accs)} run(s): {100 * mean:.1f} +- {100 * std:.1f}')
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({'runs': results}, indent=2) + '\n')
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {'train': train_command, 'evaluate': evaluate_command}[args.command](args)
    except (FileNotFoundError, ValueError, ImportError) as error:
        print(f'gat-pyg: error: {error}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
