"""Reproduction of the GAT paper's transductive results (Velickovic et al., 2018, Table 2) with
``gat-pyg train``: Cora, CiteSeer and PubMed, 10 seeds each, with our layer and with
``torch_geometric.nn.GATConv`` swapped in (``--layer pyg``); with ``--conv gatv2``, the same
recipes on GATv2's layers (ours and ``torch_geometric.nn.GATv2Conv``).

    python benchmarks/reproduce_gat.py --root ../shared/data            # everything
    python benchmarks/reproduce_gat.py --datasets Cora --layers ours    # a part
    python benchmarks/reproduce_gat.py --root ../shared/data --conv gatv2

The committed results ran as two concurrent single-threaded invocations (one per layer):
    OMP_NUM_THREADS=1 python benchmarks/reproduce_gat.py --root ../shared/data --layers ours &
    OMP_NUM_THREADS=1 python benchmarks/reproduce_gat.py --root ../shared/data --layers pyg

Each (dataset, layer) is one ``gat-pyg train ... --runs 10 --checkpoint DIR`` command
(printed, and recorded in the JSON), so an interrupted reproduction resumes where it
stopped when run again. Prints a table (mean +- std test accuracy against the paper, wall
time per run) and writes ``benchmarks/results/gat_paper.json`` (``gat_paper_gatv2.json``)
plus one results file per command under ``benchmarks/results/gat_paper/``.
"""
import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from gat_pyg.data.datasets import cache_dir
from gat_pyg_command import relative, run_gat_pyg

PAPER = {'Cora': (83.0, 0.7), 'CiteSeer': (72.5, 0.7), 'PubMed': (79.0, 0.3)}
RESULTS = Path(__file__).parent / 'results'


def run_command(dataset: str, layer: str, args: argparse.Namespace) -> dict:
    name = f'{dataset}_{layer}' + ('' if args.conv == 'gat' else f'_{args.conv}')
    out = RESULTS / 'gat_paper' / f'{name}.json'
    command = ['gat-pyg', 'train', '--dataset', dataset, '--layer', layer,
               '--runs', str(args.runs), '--seed', str(args.seed), '--quiet',
               '--out', relative(out), '--checkpoint', str(args.work / name)]
    if args.conv != 'gat':
        command[4:4] = ['--conv', args.conv]
    if args.root is not None:
        command[2:2] = ['--root', str(args.root)]
    start = time.perf_counter()
    line, result = run_gat_pyg(command, out)
    seconds = [run['seconds'] for run in result['runs']]
    return {'dataset': dataset, 'layer': layer, 'conv': args.conv, 'command': line,
            'test_acc_mean': result['test_acc_mean'], 'test_acc_std': result['test_acc_std'],
            'seconds_per_run': statistics.mean(seconds),
            'epochs_per_run': statistics.mean(run['epochs'] for run in result['runs']),
            'runs': len(result['runs']), 'wall_s': time.perf_counter() - start,
            'threads': torch.get_num_threads(),
            'paper': PAPER[dataset], 'versions': result['versions']}


def print_table(rows) -> None:
    print(f"{'dataset':<9} {'layer':<5} | {'test acc (10 runs)':>18} | {'paper':>11} | "
          f"{'s / run':>7} {'epochs':>6}")
    for row in rows:
        paper = f'{row["paper"][0]:.1f} +- {row["paper"][1]:.1f}'
        acc = f'{100 * row["test_acc_mean"]:.1f} +- {100 * row["test_acc_std"]:.1f}'
        print(f"{row['dataset']:<9} {row['layer']:<5} | {acc:>18} | {paper:>11} | "
              f"{row['seconds_per_run']:>7.1f} {row['epochs_per_run']:>6.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--root', type=Path, default=None,
                        help='dataset root (default: as gat-pyg train)')
    parser.add_argument('--datasets', nargs='+', default=list(PAPER), choices=list(PAPER))
    parser.add_argument('--layers', nargs='+', default=['ours', 'pyg'],
                        choices=['ours', 'pyg'])
    parser.add_argument('--conv', choices=['gat', 'gatv2'], default='gat')
    parser.add_argument('--runs', type=int, default=10)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--work', type=Path, default=cache_dir() / 'reproduce_gat',
                        help='checkpoint folders (default: the gat_pyg cache)')
    parser.add_argument('--out', type=Path, default=None,
                        help='default: benchmarks/results/gat_paper.json '
                        '(gat_paper_gatv2.json with --conv gatv2)')
    args = parser.parse_args()
    if args.out is None:
        args.out = RESULTS / ('gat_paper.json' if args.conv == 'gat' else
                              f'gat_paper_{args.conv}.json')

    rows = []
    for layer in args.layers:
        for dataset in args.datasets:
            row = run_command(dataset, layer, args)
            # Merged into the file as it is now: rows of other datasets / layers, from
            # earlier or concurrent invocations, are kept.
            rows = json.loads(args.out.read_text())['rows'] if args.out.is_file() else []
            rows = [r for r in rows if (r['dataset'], r['layer']) != (dataset, layer)] + [row]
            rows.sort(key=lambda r: (list(PAPER).index(r['dataset']), r['layer'] != 'ours'))
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({'rows': rows}, indent=2) + '\n')
    print_table(rows)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
