"""Full-batch against mini-batch training (``gat-pyg train --loader neighbor``) on the same
split, with our layer: Tolokers (split 0, ROC-AUC), Coauthor-Physics and Amazon Computers
(random 20/30-per-class split, seed 0, accuracy).

    OMP_NUM_THREADS=1 python benchmarks/minibatch.py --root ../shared/data
    OMP_NUM_THREADS=1 python benchmarks/minibatch.py --root ../shared/data --datasets Computers

Each (dataset, loader) is one ``gat-pyg train ... --checkpoint DIR`` command (printed, and
recorded in the JSON), so an interrupted benchmark resumes where it stopped when run again
and finished runs are not trained again. Mini-batch training samples 10 neighbours per hop
around batches of 1024 seed nodes, and validates every epoch by layer-wise inference over
the whole graph. Prints a table (test score of each, their difference in points, seconds
per epoch including validation) and writes ``benchmarks/results/minibatch.json`` plus one
results file per command under ``benchmarks/results/minibatch/``.
"""
import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Dict, List, Optional

from gat_pyg.data.datasets import cache_dir
from gat_pyg_command import relative, run_gat_pyg

RESULTS = Path(__file__).parent / 'results'
MINI_BATCH = ['--loader', 'neighbor', '--num-neighbors', '10', '10', '--batch-size', '1024']
# Per dataset: its split, an epoch cap (early stopping usually ends runs sooner) and, for
# mini-batch runs, the inference batch size (Physics' 8415 input features make small
# inference batches slow: each batch projects its whole neighbourhood).
DATASETS: Dict[str, Dict[str, List[str]]] = {
    'Tolokers': {'data': ['--split', '0', '--epochs', '1000'], 'neighbor': []},
    'Physics': {'data': ['--split-seed', '0', '--epochs', '300'],
                'neighbor': ['--eval-batch-size', '16384']},
    'Computers': {'data': ['--split-seed', '0', '--epochs', '1000'], 'neighbor': []},
}


def run_command(dataset: str, loader: str, args: argparse.Namespace) -> dict:
    out = RESULTS / 'minibatch' / f'{dataset}_{loader}.json'
    command = ['gat-pyg', 'train', '--dataset', dataset, '--layer', 'ours',
               *DATASETS[dataset]['data'], '--runs', str(args.runs), '--seed', str(args.seed),
               '--quiet', '--out', relative(out),
               '--checkpoint', str(args.work / f'{dataset}_{loader}')]
    if loader == 'neighbor':
        command += MINI_BATCH + DATASETS[dataset]['neighbor']
    if args.root is not None:
        command[2:2] = ['--root', str(args.root)]
    start = time.perf_counter()
    line, result = run_gat_pyg(command, out)
    runs = result['runs']
    metric = runs[0]['metric']
    return {
        'dataset': dataset, 'loader': loader, 'command': line,
        'metric': metric,
        'test_score_mean': statistics.mean(run['test_score'] for run in runs),
        'test_score_std': statistics.pstdev(run['test_score'] for run in runs),
        'val_score_mean': statistics.mean(run['val_score'] for run in runs),
        'seconds_per_epoch': statistics.mean(run['seconds'] / run['epochs'] for run in runs),
        'epochs_per_run': statistics.mean(run['epochs'] for run in runs),
        'best_epoch_per_run': statistics.mean(run['best_epoch'] for run in runs),
        'runs': len(runs), 'wall_s': time.perf_counter() - start,
        'omp_num_threads': os.environ.get('OMP_NUM_THREADS'),
        'versions': result['versions'],
    }


def _cell(row: Optional[dict], key: str, spec: str, scale: float = 1.0) -> str:
    return format(scale * row[key], spec) if row is not None else '-'


def print_table(rows: List[dict]) -> None:
    by_key = {(row['dataset'], row['loader']): row for row in rows}
    print(f"{'dataset':<10} {'metric':<8} | {'full-batch':>10} {'mini-batch':>10} "
          f"{'diff':>6} | {'full s/ep':>9} {'mini s/ep':>9} | {'epochs full/mini':>16}")
    for dataset in dict.fromkeys(row['dataset'] for row in rows):
        full, mini = by_key.get((dataset, 'full')), by_key.get((dataset, 'neighbor'))
        diff = (f"{100 * (mini['test_score_mean'] - full['test_score_mean']):+.1f}"
                if full and mini else '-')
        print(f"{dataset:<10} {(full or mini)['metric']:<8} | "
              f"{_cell(full, 'test_score_mean', '.1f', 100):>10} "
              f"{_cell(mini, 'test_score_mean', '.1f', 100):>10} {diff:>6} | "
              f"{_cell(full, 'seconds_per_epoch', '.2f'):>9} "
              f"{_cell(mini, 'seconds_per_epoch', '.2f'):>9} | "
              f"{_cell(full, 'epochs_per_run', '.0f'):>7} / "
              f"{_cell(mini, 'epochs_per_run', '.0f')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--root', type=Path, default=None,
                        help='dataset root (default: as gat-pyg train)')
    parser.add_argument('--datasets', nargs='+', default=list(DATASETS),
                        choices=list(DATASETS))
    parser.add_argument('--loaders', nargs='+', default=['full', 'neighbor'],
                        choices=['full', 'neighbor'])
    parser.add_argument('--runs', type=int, default=1, help='seeds per command (default 1)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--checkpoint', dest='work', type=Path,
                        default=cache_dir() / 'minibatch',
                        help='checkpoint folders (default: the gat_pyg cache)')
    parser.add_argument('--out', type=Path, default=RESULTS / 'minibatch.json')
    args = parser.parse_args()

    rows = [run_command(dataset, loader, args)
            for dataset in args.datasets for loader in args.loaders]
    if args.out.is_file():  # keep the rows of datasets/loaders not run this time
        done = {(row['dataset'], row['loader']) for row in rows}
        rows = [row for row in json.loads(args.out.read_text())['rows']
                if (row['dataset'], row['loader']) not in done] + rows
    order = {name: k for k, name in enumerate(DATASETS)}
    rows.sort(key=lambda row: (order[row['dataset']], row['loader'] != 'full'))
    print_table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({'rows': rows}, indent=2) + '\n')
    print(f'written to {args.out}')


if __name__ == '__main__':
    main()
