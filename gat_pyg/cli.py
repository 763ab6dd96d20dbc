"""The ``gat-pyg`` command (also ``python -m gat_pyg``)."""
import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional

from gat_pyg.data import (MUTAG_ATOMS, dataset_names, default_root, fixed_split, get_spec,
                          load_dataset, load_graph_dataset, random_split, synthetic_graph)
from gat_pyg.distributed import (DistributedContext, LaunchError, init_distributed,
                                 rank_zero_first, shutdown)
from gat_pyg.graph_training import GraphTrainConfig
from gat_pyg.metrics import metric_key
from gat_pyg.nn.conv import CONVS
from gat_pyg.nn.models.gat import INITS
from gat_pyg.nn.models.graph_gat import READOUTS
from gat_pyg.training import (SYNTHETIC, SYNTHETIC_EPOCHS, TrainConfig, build_model,
                              describe_score, evaluate, inference_batches, load_checkpoint,
                              prepare_data, summarize, train_run)


def _checked(convert: Callable[[str], Any], accept: Callable[[Any], bool],
             expected: str) -> Callable[[str], Any]:
    """An argparse ``type``: ``convert`` the text, then refuse values that ``accept``
    rejects with 'expected <expected>'."""
    def parse(text: str) -> Any:
        value = convert(text)
        if not accept(value):
            raise argparse.ArgumentTypeError(f'expected {expected}, got {text}')
        return value
    parse.__name__ = convert.__name__  # argparse names it in "invalid int value: 'x'"
    return parse


_positive_int = _checked(int, lambda value: value >= 1, 'a positive integer')
_at_least_two = _checked(int, lambda value: value >= 2, 'an integer of at least 2')
_even = _checked(int, lambda value: value >= 0 and value % 2 == 0,
                 'an even non-negative integer')
_probability = _checked(float, lambda value: 0.0 <= value < 1.0, 'a probability in [0, 1)')
_non_negative_float = _checked(float, lambda value: value >= 0.0, 'a non-negative number')
_open_fraction = _checked(float, lambda value: 0.0 < value < 1.0, 'a fraction in (0, 1)')


FIGURE_GRAPHS = 6  # test graphs drawn by --attention-figure

# The flags that only --dataset synthetic takes (destination -> flag).
SYNTHETIC_FLAGS = {'nodes': '--nodes', 'edges': '--edges', 'features': '--features',
                   'classes': '--classes', 'graph_seed': '--graph-seed'}
# The flags that only one task takes (destination -> flag); the other task refuses them.
NODE_ONLY_FLAGS = {'runs': '--runs', 'patience': '--patience', 'out_heads': '--out-heads',
                   'split_seed': '--split-seed', 'split': '--split', 'residual': '--residual',
                   'loader': '--loader', 'num_neighbors': '--num-neighbors',
                   'eval_batch_size': '--eval-batch-size',
                   'normalize_features': '--[no-]normalize-features',
                   'dropout_per_head': '--[no-]dropout-per-head', 'init': '--init',
                   'plot': '--plot',
                   'ddp': '--ddp', **SYNTHETIC_FLAGS}
GRAPH_ONLY_FLAGS = {'readout': '--readout', 'folds': '--folds',
                    'val_fraction': '--val-fraction',
                    'num_layers': '--layers', 'readout_heads': '--readout-heads',
                    'degree_features': '--no-degree-features',
                    'node_attributes': '--node-attributes',
                    'attention_figure': '--attention-figure'}


def layer_label(config) -> str:
    """How output lines name a config's layer: ``ours`` or ``pyg``, and the conv unless it
    is the default GAT."""
    return config.layer if config.conv == 'gat' else f'{config.layer} {config.conv}'


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='gat-pyg', description=__doc__)
    commands = parser.add_subparsers(dest='command', required=True)

    train = commands.add_parser(
        'train', help='train a GAT on a node- or graph-classification dataset',
        description='--task node (default): trains a 2-layer GAT full-batch with the GAT '
        'paper\'s recipe and early stopping. --task graph: 10-fold stratified '
        'cross-validation of a graph classifier (GraphGAT: GAT layers, an attention or mean '
        'readout, an MLP) on a TU dataset. Every recipe default can be overridden by a '
        'flag; flags of the other task are refused.')
    train.add_argument('--task', choices=('node', 'graph'), default='node',
                       help="'node' (default) or 'graph' classification")
    train.add_argument('--dataset', required=True,
                       help=f"node task: one of {', '.join(dataset_names('node'))}, or "
                       f"'{SYNTHETIC}' (a generated graph, see --nodes); graph task: one "
                       f"of {', '.join(dataset_names('graph'))}")
    train.add_argument('--root', type=Path, default=None,
                       help=f'folder holding the datasets in PyG layout (default: '
                       f'$GAT_PYG_DATA, else {default_root()})')
    train.add_argument('--layer', choices=('ours', 'pyg'), default='ours',
                       help="'ours' (gat_pyg.nn's layer) or 'pyg' (torch_geometric.nn's)")
    train.add_argument('--conv', choices=CONVS, default='gat',
                       help="the attention layer: 'gat' (GATConv, the default) or 'gatv2' "
                       "(GATv2Conv, dynamic attention)")
    train.add_argument('--seed', type=int, default=0,
                       help='node task: first seed; graph task: seed of the folds, weights '
                       'and batches (default 0)')
    train.add_argument('--epochs', type=_positive_int, default=None,
                       help=f'node task: maximum epochs (default 100000, {SYNTHETIC} '
                       f'{SYNTHETIC_EPOCHS}); graph task: epochs '
                       f'per fold (default {GraphTrainConfig.epochs})')
    train.add_argument('--hidden', type=_positive_int, default=None,
                       help='hidden channels per head (default 8; graph task '
                       f'{GraphTrainConfig.hidden})')
    train.add_argument('--heads', type=_positive_int, default=None,
                       help=f'hidden heads (default 8; graph task {GraphTrainConfig.heads})')
    train.add_argument('--dropout', type=_probability, default=None,
                       help='node task: dropout on inputs and attention (default 0.6); graph '
                       f'task: dropout in the classifier (default {GraphTrainConfig.dropout})')
    train.add_argument('--ddp', action='store_true', default=None,
                       help='node task with --loader neighbor: data-parallel training over '
                       'the processes of a torchrun job (gloo on CPU, nccl on GPUs), each '
                       "rank on its share of the seed nodes; e.g. 'torchrun "
                       "--nproc-per-node 2 -m gat_pyg train --loader neighbor --ddp ...'")
    train.add_argument('--lr', type=_non_negative_float, default=None,
                       help='Adam learning rate (default 0.005, PubMed 0.01; graph task '
                       f'{GraphTrainConfig.lr})')
    train.add_argument('--weight-decay', type=_non_negative_float, default=None,
                       help='L2 penalty (default 5e-4, PubMed 1e-3; graph task '
                       f'{GraphTrainConfig.weight_decay})')
    train.add_argument('--out', type=Path, default=None, help='write results as JSON')
    train.add_argument('--checkpoint', type=Path, default=None,
                       help='folder for resumable checkpoints (one file per seed or fold); '
                       'rerunning the same command resumes an interrupted run and skips '
                       'finished ones')
    train.add_argument('--checkpoint-every', type=_positive_int, default=10,
                       help='epochs between checkpoints (default 10)')
    train.add_argument('--batch-size', type=_positive_int, default=None,
                       help='node task with --loader neighbor: seed nodes per mini-batch '
                       '(default 1024); graph task: graphs per batch (default '
                       f'{GraphTrainConfig.batch_size})')
    train.add_argument('--quiet', action='store_true',
                       help='no progress bars; one log line per run or fold')

    node = train.add_argument_group('node task only')
    node.add_argument('--runs', type=_positive_int, default=None,
                      help='repeat with seeds S..S+K-1 (default 1)')
    node.add_argument('--patience', type=_positive_int, default=None,
                      help='early-stopping patience (default 100)')
    node.add_argument('--out-heads', type=_positive_int, default=None,
                      help='output heads, averaged (default 1; PubMed 8)')
    node.add_argument('--split-seed', type=int, default=None,
                      help='seed of the random 20/30-per-class split for datasets '
                      'without a public one (default 0)')
    node.add_argument('--normalize-features', action=argparse.BooleanOptionalAction,
                      default=None,
                      help='row-normalise the features (default: on, as in the paper; off '
                      'for PubMed, whose TF-IDF features are used as given, and for '
                      'Tolokers/Minesweeper)')
    node.add_argument('--dropout-per-head', action=argparse.BooleanOptionalAction,
                      default=None,
                      help="each attention head drops the layer input with its own mask, "
                      "as the paper's reference code does (default: off)")
    node.add_argument('--init', choices=INITS, default=None,
                      help="'paper' (Glorot per head, as the GAT paper; the default on "
                      "PubMed) or 'pyg' (the layers' own; the default elsewhere)")
    node.add_argument('--split', type=int, default=None,
                      help='which of the fixed splits of a dataset shipped with several '
                      '(Tolokers, Minesweeper: 0..9, default 0)')
    node.add_argument('--residual', action='store_true', default=None,
                      help='a linear skip connection in each layer (default: off; on for '
                      'the heterophilous graphs)')
    node.add_argument('--loader', choices=('full', 'neighbor'), default=None,
                      help="'full' (full-batch, default) or 'neighbor' (mini-batches of "
                      "sampled subgraphs, PyG's NeighborLoader)")
    node.add_argument('--num-neighbors', type=_positive_int, nargs='+', default=None,
                      help='with --loader neighbor: neighbours sampled per hop, one count '
                      'per layer (default 10 10)')
    node.add_argument('--eval-batch-size', type=_positive_int, default=None,
                      help='with --loader neighbor: target nodes per batch of layer-wise '
                      'inference (default 4096)')
    node.add_argument('--plot', type=Path, default=None,
                      help="write training/validation curves as a PNG (needs matplotlib: "
                      "pip install 'gat-pyg[plot]')")

    synthetic = train.add_argument_group(
        f'--dataset {SYNTHETIC} only',
        'a degree-corrected stochastic block model with power-law degrees and Gaussian '
        'class-mean features (gat_pyg.data.synthetic_graph), split 60/20/20 at random; '
        f'features are not normalised and --epochs defaults to {SYNTHETIC_EPOCHS}')
    synthetic.add_argument('--nodes', type=_positive_int, default=None,
                           help='number of nodes (required)')
    synthetic.add_argument('--edges', type=_even, default=None,
                           help='number of directed edges, even: every edge is stored in '
                           'both directions (required)')
    synthetic.add_argument('--features', type=_positive_int, default=None,
                           help='node features (default 128)')
    synthetic.add_argument('--classes', type=_at_least_two, default=None,
                           help='classes (default 8)')
    synthetic.add_argument('--graph-seed', type=int, default=None,
                           help='seed of the graph, its features and split (default 0)')

    graph = train.add_argument_group('graph task only')
    graph.add_argument('--readout', choices=READOUTS, default=None,
                       help=f"graph readout: 'attention' (GlobalAttentionPool) or 'mean' "
                       f"(default {GraphTrainConfig.readout})")
    graph.add_argument('--folds', type=_at_least_two, default=None,
                       help=f'cross-validation folds (default {GraphTrainConfig.folds})')
    graph.add_argument('--val-fraction', type=_open_fraction, default=None,
                       help='fraction of each fold\'s training graphs held out to choose '
                       f'the epoch (default {GraphTrainConfig.val_fraction})')
    graph.add_argument('--layers', dest='num_layers', type=_positive_int, default=None,
                       help=f'attention layers (default {GraphTrainConfig.num_layers})')
    graph.add_argument('--readout-heads', type=_positive_int, default=None,
                       help='gates of the attention readout, averaged (default '
                       f'{GraphTrainConfig.readout_heads})')
    graph.add_argument('--no-degree-features', dest='degree_features',
                       action='store_false', default=None,
                       help='do not append one-hot node degrees to the node features '
                       '(datasets without node features always get them)')
    graph.add_argument('--node-attributes', action='store_true', default=None,
                       help='use the continuous node attributes of datasets that have them '
                       '(ENZYMES, PROTEINS), standardised, before the one-hot labels')
    graph.add_argument('--attention-figure', type=Path, default=None,
                       help='draw test graphs of the first fold with the attention '
                       'readout\'s weights as a PNG (needs matplotlib)')

    evaluate = commands.add_parser(
        'evaluate', help='reload trained models from a checkpoint folder and report metrics',
        description='Rebuilds the model of every finished run (node task) or fold (graph '
        'task) in a --checkpoint folder of `gat-pyg train`, reloads its kept weights and '
        'reports loss and accuracy: on the train/val/test splits of a run, on the '
        'validation and test graphs of a fold.')
    evaluate.add_argument('--checkpoint', type=Path, required=True,
                          help='a checkpoint folder, or one run-seed<S>.pt or fold-<K>.pt '
                          'file in it')
    evaluate.add_argument('--root', type=Path, default=None,
                          help='folder holding the datasets (as for train)')
    evaluate.add_argument('--out', type=Path, default=None, help='write metrics as JSON')
    return parser


def _load_data(config: TrainConfig, root: Optional[Path], dataset: str):
    """The dataset of ``config`` with its split and preprocessing, and its class count."""
    if config.synthetic is not None:
        return prepare_data(config, synthetic_graph(**config.synthetic)), \
            config.synthetic['num_classes']
    spec = get_spec(dataset)
    _, data = load_dataset(spec.name if spec.family != 'CitationFull' else dataset, root)
    if config.split_seed is not None:
        data = random_split(data, config.split_seed)
    if config.split is not None:
        data = fixed_split(data, config.split)
    return prepare_data(config, data), int(data.y.max()) + 1


def check_task_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exits with a usage error if ``args`` of ``gat-pyg train`` hold a flag of the other
    task, or a graph flag that makes no sense with the others."""
    other_flags = GRAPH_ONLY_FLAGS if args.task == 'node' else NODE_ONLY_FLAGS
    given = [flag for dest, flag in other_flags.items() if getattr(args, dest) is not None]
    if given:
        other = 'graph' if args.task == 'node' else 'node'
        parser.error(f"{', '.join(given)} only appl{'ies' if len(given) == 1 else 'y'} to "
                     f"--task {other} (this is --task {args.task})")
    if args.task == 'node':
        given = [flag for dest, flag in SYNTHETIC_FLAGS.items()
                 if getattr(args, dest) is not None]
        if args.dataset == SYNTHETIC:
            if args.nodes is None or args.edges is None:
                parser.error(f'--dataset {SYNTHETIC} needs --nodes and --edges')
            for dest, flag in (('split_seed', '--split-seed'), ('split', '--split')):
                if getattr(args, dest) is not None:
                    parser.error(f'{flag} does not apply to --dataset {SYNTHETIC}: its '
                                 'random split comes with the graph (--graph-seed)')
        elif given:
            parser.error(f"{', '.join(given)} only appl{'ies' if len(given) == 1 else 'y'} "
                         f'to --dataset {SYNTHETIC}')
    if args.task == 'graph' and args.readout == 'mean':
        for dest, flag in (('attention_figure', '--attention-figure'),
                           ('readout_heads', '--readout-heads')):
            if getattr(args, dest) is not None:
                parser.error(f'{flag} needs --readout attention')


def train_command(args: argparse.Namespace) -> int:
    if args.task == 'graph':
        return graph_train_command(args)
    if args.dataset == SYNTHETIC:
        name, split_seed = SYNTHETIC, None
        synthetic = {'num_nodes': args.nodes, 'num_edges': args.edges,
                     'num_features': args.features if args.features is not None else 128,
                     'num_classes': args.classes if args.classes is not None else 8,
                     'seed': args.graph_seed if args.graph_seed is not None else 0}
    else:
        spec = get_spec(args.dataset)
        if spec.task != 'node':
            load_dataset(args.dataset, args.root)  # raises the error that names --task graph
        name, synthetic = spec.name, None
        split_seed = None if spec.public_split else (
            args.split_seed if args.split_seed is not None else 0)
    num_runs = args.runs if args.runs is not None else 1
    config = TrainConfig.for_dataset(
        name, layer=args.layer, conv=args.conv, hidden=args.hidden, heads=args.heads,
        out_heads=args.out_heads, dropout=args.dropout, lr=args.lr,
        weight_decay=args.weight_decay, epochs=args.epochs, patience=args.patience,
        normalize_features=args.normalize_features,
        dropout_per_head=args.dropout_per_head, init=args.init, split=args.split,
        residual=args.residual, loader=args.loader, num_neighbors=args.num_neighbors,
        batch_size=args.batch_size, eval_batch_size=args.eval_batch_size,
        split_seed=split_seed, synthetic=synthetic)
    if args.plot is not None:
        from gat_pyg.plotting import require_matplotlib
        require_matplotlib()  # fail now, not after training
    distributed = None
    if args.ddp:
        if config.loader != 'neighbor':
            raise ValueError('--ddp shares out the seed nodes of mini-batches: add '
                             '--loader neighbor')
        distributed = init_distributed()
    try:
        return _train_node_task(args, config, num_runs, distributed)
    finally:
        shutdown()


def _train_node_task(args: argparse.Namespace, config: TrainConfig, num_runs: int,
                     distributed: Optional[DistributedContext]) -> int:
    with rank_zero_first(distributed):  # PyG processes the dataset into shared files
        data, num_classes = _load_data(config, args.root, args.dataset)
    is_main = distributed is None or distributed.is_main

    runs = []
    for seed in range(args.seed, args.seed + num_runs):
        try:
            run = train_run(config, data, num_classes, seed, progress=not args.quiet,
                            checkpoint=args.checkpoint,
                            checkpoint_every=args.checkpoint_every, distributed=distributed)
        except KeyboardInterrupt:
            where = (f'; rerun the same command to resume from {args.checkpoint}'
                     if args.checkpoint is not None else '')
            print(f'gat-pyg: interrupted{where}', file=sys.stderr)
            return 130
        runs.append(run)
        key = metric_key(config.metric)
        if is_main:
            print(f'{config.dataset} [{layer_label(config)}] seed {seed}: '
                  f'test_{key}={run.test_score:.4f} val_{key}={run.val_score:.4f} '
                  f'epochs={run.epochs} ({run.seconds:.1f}s)',
                  flush=True)
    if not is_main:
        return 0  # rank 0 reports and writes the results
    split = None
    if config.split_seed is not None:
        split = {'seed': config.split_seed, 'train_per_class': 20, 'val_per_class': 30,
                 'train': data.train_mask.nonzero().view(-1).tolist(),
                 'val': data.val_mask.nonzero().view(-1).tolist(),
                 'num_test': int(data.test_mask.sum())}
    summary = summarize(config, runs, split)
    if distributed is not None:
        summary['world_size'] = distributed.world_size
    print(f'{config.dataset} [{layer_label(config)}] '
          + describe_score(config.metric, [run.test_score for run in runs]))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2) + '\n')
    if args.plot is not None:
        from gat_pyg.plotting import plot_curves
        plot_curves(runs, args.plot, title=f'{config.dataset} [{layer_label(config)}]')
        print(f'curves written to {args.plot}')
    return 0


def graph_train_command(args: argparse.Namespace) -> int:
    from gat_pyg.graph_training import (cross_validation_splits, load_data, readout_attention,
                                        summarize_folds, train_fold)
    spec = get_spec(args.dataset)
    if spec.task != 'graph':
        load_graph_dataset(args.dataset, args.root)  # raises the error that names --task node
    config = GraphTrainConfig.with_overrides(
        dataset=spec.name, layer=args.layer, conv=args.conv, readout=args.readout,
        folds=args.folds,
        seed=args.seed, val_fraction=args.val_fraction,
        degree_features=args.degree_features, node_attributes=args.node_attributes,
        epochs=args.epochs,
        batch_size=args.batch_size, num_layers=args.num_layers, hidden=args.hidden,
        heads=args.heads, readout_heads=args.readout_heads, dropout=args.dropout, lr=args.lr,
        weight_decay=args.weight_decay)
    if args.attention_figure is not None:
        from gat_pyg.plotting import require_matplotlib
        require_matplotlib('--attention-figure')  # fail now, not after training
    dataset = load_data(config, args.root)
    splits = cross_validation_splits(dataset.y, config.folds, config.val_fraction,
                                     config.seed)
    name = f'{spec.name} [{layer_label(config)}, {config.readout} readout]'
    results, first_model = [], None
    for fold, split in enumerate(splits):
        try:
            result, model = train_fold(config, dataset, split, fold, progress=not args.quiet,
                                       checkpoint=args.checkpoint,
                                       checkpoint_every=args.checkpoint_every)
        except KeyboardInterrupt:
            where = (f'; rerun the same command to resume from {args.checkpoint}'
                     if args.checkpoint is not None else '')
            print(f'gat-pyg: interrupted{where}', file=sys.stderr)
            return 130
        results.append(result)
        first_model = model if fold == 0 else first_model
        print(f'{name} fold {fold}: test_acc={result.test_acc:.4f} '
              f'val_acc={result.val_acc:.4f} best_epoch={result.best_epoch} '
              f'({result.seconds:.1f}s)', flush=True)
    summary = summarize_folds(config, results, splits)
    print(f"{name} test accuracy over {len(results)} folds: "
          f"{100 * summary['test_acc_mean']:.1f} +- {100 * summary['test_acc_std']:.1f}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2) + '\n')
    if args.attention_figure is not None:
        from gat_pyg.plotting import plot_readout_attention
        graphs = [dataset[int(i)] for i in splits[0].test[:FIGURE_GRAPHS]]
        betas, predictions = readout_attention(first_model, graphs)
        plot_readout_attention(
            graphs, betas, args.attention_figure,
            node_names=MUTAG_ATOMS if spec.name == 'MUTAG' else None,
            titles=[f'graph {int(i)}: class {int(g.y)}, predicted {p}'
                    for i, g, p in zip(splits[0].test, graphs, predictions)],
            title=f'{name}, fold 0: readout attention on test graphs')
        print(f'attention figure written to {args.attention_figure}')
    return 0


def _evaluate_runs(states: List[dict], root: Optional[Path]) -> List[dict]:
    """Tests again the kept models of finished node-task runs."""
    results, loaded = [], {}
    for state in states:
        config = TrainConfig(**state['config'])
        data_key = (config.dataset, config.split_seed, config.split, config.normalize_features,
                    json.dumps(config.synthetic, sort_keys=True))
        if data_key not in loaded:  # the runs of one folder share their data
            loaded[data_key] = _load_data(config, root, config.dataset)
        data, num_classes = loaded[data_key]
        model = build_model(config, data.num_features, num_classes)
        model.load_state_dict(state['stopping']['best_state'])
        metrics = evaluate(model, data, config.metric, inference_batches(config, data))
        results.append({'seed': state['seed'], **metrics})
        print(f"{config.dataset} [{layer_label(config)}] seed {state['seed']}: "
              + ' '.join(f'{k}={v:.4f}' for k, v in metrics.items()))
    if len(results) > 1:
        key = f'test_{metric_key(config.metric)}'
        print(describe_score(config.metric, [result[key] for result in results]))
    return results


def _evaluate_folds(states: List[dict], root: Optional[Path]) -> List[dict]:
    """Tests again the kept models of finished cross-validation folds (one folder, so one
    recipe: ``gat-pyg train`` refuses to mix them)."""
    from gat_pyg.graph_training import (cross_validation_splits, evaluate_kept_model,
                                        load_data)
    config = GraphTrainConfig(**states[0]['config'])
    dataset = load_data(config, root)
    splits = cross_validation_splits(dataset.y, config.folds, config.val_fraction,
                                     config.seed)
    results = []
    for state in states:
        metrics = evaluate_kept_model(config, dataset, splits[state['fold']],
                                      state['best']['state'])
        results.append({'fold': state['fold'], **metrics})
        print(f"{config.dataset} [{layer_label(config)}, {config.readout} readout] fold "
              f"{state['fold']}: " + ' '.join(f'{k}={v:.4f}' for k, v in metrics.items()))
    accs = [result['test_acc'] for result in results]
    mean = sum(accs) / len(accs)
    std = (sum((acc - mean) ** 2 for acc in accs) / len(accs)) ** 0.5
    print(f'test accuracy over {len(accs)} folds: {100 * mean:.1f} +- {100 * std:.1f}')
    return results


def evaluate_command(args: argparse.Namespace) -> int:
    path = args.checkpoint
    files = [path]
    if path.is_dir():
        files = sorted(path.glob('run-seed*.pt')) + sorted(
            path.glob('fold-*.pt'), key=lambda file: int(file.stem.split('-')[1]))
    if not files or not all(f.is_file() for f in files):
        raise FileNotFoundError(f"No checkpoint at '{path}' (expected a folder of "
                                f"run-seed<S>.pt or fold-<K>.pt files written by 'gat-pyg "
                                f"train --checkpoint', or one such file)")
    finished = []
    for file in files:
        state = load_checkpoint(file)
        if state['result'] is None:
            print(f"{file.name}: unfinished (epoch {state['epoch']}); resume it with "
                  f"'gat-pyg train ... --checkpoint {file.parent}'")
        else:
            finished.append(state)
    if not finished:
        raise ValueError(f"No finished run in '{path}'")
    if 'fold' in finished[0]:
        document = {'folds': _evaluate_folds(finished, args.root)}
    else:
        document = {'runs': _evaluate_runs(finished, args.root)}
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(document, indent=2) + '\n')
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == 'train':
        check_task_flags(parser, args)
    try:
        return {'train': train_command, 'evaluate': evaluate_command}[args.command](args)
    except (FileNotFoundError, ValueError, ImportError, LaunchError) as error:
        print(f'gat-pyg: error: {error}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
