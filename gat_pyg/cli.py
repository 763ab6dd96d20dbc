"""The ``gat-pyg`` command (also ``python -m gat_pyg``)."""
import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from gat_pyg.data import dataset_names, default_root, get_spec, load_dataset, random_split
from gat_pyg.training import TrainConfig, summarize, train_run


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
    train.add_argument('--out', type=Path, default=None, help='write results as JSON')
    train.add_argument('--quiet', action='store_true',
                       help='no progress bars; one log line per run')
    return parser


def train_command(args: argparse.Namespace) -> int:
    spec = get_spec(args.dataset)
    config = TrainConfig.for_dataset(
        spec.name, layer=args.layer, hidden=args.hidden, heads=args.heads,
        out_heads=args.out_heads, dropout=args.dropout, lr=args.lr,
        weight_decay=args.weight_decay, epochs=args.epochs, patience=args.patience,
        split_seed=None if spec.public_split else args.split_seed)
    _, data = load_dataset(spec.name if spec.family != 'CitationFull' else args.dataset,
                           args.root)
    if config.split_seed is not None:
        data = random_split(data, config.split_seed)
    num_classes = int(data.y.max()) + 1

    runs = []
    for seed in range(args.seed, args.seed + args.runs):
        run = train_run(config, data, num_classes, seed, progress=not args.quiet)
        runs.append(run)
        print(f'{spec.name} [{config.layer}] seed {seed}: test_acc={run.test_acc:.4f} '
              f'val_acc={run.val_acc:.4f} epochs={run.epochs} ({run.seconds:.1f}s)',
              flush=True)
    summary = summarize(config, runs)
    print(f"{spec.name} [{config.layer}] test accuracy over {len(runs)} run(s): "
          f"{100 * summary['test_acc_mean']:.1f} +- {100 * summary['test_acc_std']:.1f}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2) + '\n')
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {'train': train_command}[args.command](args)
    except (FileNotFoundError, ValueError) as error:
        print(f'gat-pyg: error: {error}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
