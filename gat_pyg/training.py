"""Node classification with the GAT paper's early stopping, full-batch or in mini-batches of
sampled subgraphs, resumable from checkpoints: the engine of ``gat-pyg train`` and
``gat-pyg evaluate``.

Both ways of training share everything but the epoch: :func:`train_step` is one optimizer
step on a graph (the whole graph, or a sampled subgraph whose seed nodes come first), a
full-batch epoch is one such step and a mini-batch epoch (:func:`neighbor_epoch`) one per
batch of :func:`gat_pyg.minibatch.seed_node_loader`. Validation, early stopping,
checkpoints and results are the same code for both.
"""
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.loader import NeighborLoader
from torch_geometric.typing import Adj
from tqdm import tqdm

import gat_pyg
from gat_pyg.data import get_spec
from gat_pyg.distributed import DistributedContext, all_gather_objects, wrap_model
from gat_pyg.metrics import METRIC_NAMES, accuracy, metric_key, score
from gat_pyg.minibatch import full_neighborhood_loader, seed_node_loader

SYNTHETIC = 'synthetic'  # the dataset name of gat_pyg.data.synthetic_graph's graphs
SYNTHETIC_EPOCHS = 200  # its epoch cap: at tens of millions of edges an epoch takes minutes


@dataclass
class TrainConfig:
    """One training recipe. Defaults are the GAT paper's Cora/CiteSeer recipe, trained
    full-batch."""
    dataset: str = 'Cora'
    layer: str = 'ours'  # 'ours' (gat_pyg.nn's layer) or 'pyg' (torch_geometric's)
    conv: str = 'gat'  # the attention layer: 'gat' (GATConv) or 'gatv2' (GATv2Conv)
    hidden: int = 8
    heads: int = 8
    out_heads: int = 1
    dropout: float = 0.6
    negative_slope: float = 0.2
    lr: float = 0.005
    weight_decay: float = 5e-4
    epochs: int = 100000
    patience: int = 100
    normalize_features: bool = True  # row-normalised bag-of-words, as in the paper
    split_seed: Optional[int] = None  # set for datasets without a public split
    split: Optional[int] = None  # which fixed split, for datasets shipped with several
    residual: bool = False  # a linear skip connection in each layer
    dropout_per_head: bool = False  # one input-dropout mask per head (the reference code's)
    init: str = 'pyg'  # 'pyg' (the layers' own) or 'paper' (Glorot per head)
    metric: str = 'accuracy'  # model selection and results: 'accuracy' or 'roc_auc'
    loader: str = 'full'  # 'full' (full-batch) or 'neighbor' (sampled mini-batches)
    num_neighbors: List[int] = field(default_factory=lambda: [10, 10])  # per hop
    batch_size: int = 1024  # seed nodes per mini-batch
    eval_batch_size: int = 4096  # target nodes per batch of layer-wise inference
    # For dataset 'synthetic': synthetic_graph's num_nodes, num_edges, num_features,
    # num_classes and seed, so that evaluation regenerates the same graph.
    synthetic: Optional[Dict[str, int]] = None

    @classmethod
    def for_dataset(cls, dataset: str, **overrides) -> 'TrainConfig':
        """The recipe for ``dataset``, with ``overrides`` (``None`` values ignored) applied
        on top:

        - the GAT paper's, by default (with ``conv='gatv2'`` the same, on GATv2's layers,
          with their own initialisation);
        - PubMed: the paper's (8 averaged output heads, lr 0.01, L2 1e-3), with its TF-IDF
          features as PyG gives them, not row-normalised, and the paper's initialisation,
          Glorot per head (:func:`~gat_pyg.nn.models.gat.glorot_per_head_`; see the
          README for how both were chosen);
        - the binary heterophilous graphs (Tolokers, Minesweeper): split 0 of their ten,
          ROC-AUC, and :data:`HETEROPHILOUS_RECIPE`;
        - ``'synthetic'`` (:func:`~gat_pyg.data.synthetic_graph`, whose arguments the
          ``synthetic`` override must give): the paper's, with the Gaussian features as
          generated (row-normalising them would be meaningless) and an epoch cap of
          :data:`SYNTHETIC_EPOCHS` instead of 100000.
        """
        if dataset == SYNTHETIC:
            if overrides.get('synthetic') is None:
                raise ValueError("The synthetic dataset needs synthetic_graph's arguments "
                                 "(--nodes and --edges)")
            config = cls(dataset=SYNTHETIC, normalize_features=False, epochs=SYNTHETIC_EPOCHS)
        else:
            spec = get_spec(dataset)
            config = cls(dataset=dataset, metric=spec.metric)
            if spec.fixed_splits > 1:
                config.split = 0
            if dataset.lower() == 'pubmed':
                config.out_heads, config.lr, config.weight_decay = 8, 0.01, 1e-3
                config.normalize_features, config.init = False, 'paper'
            if spec.family == 'HeterophilousGraphDataset':
                for key, value in HETEROPHILOUS_RECIPE.items():
                    setattr(config, key, value)
        for key, value in overrides.items():
            if value is not None:
                setattr(config, key, value)
        if config.conv == 'gatv2':
            if overrides.get('init') == 'paper' or config.dropout_per_head:
                raise ValueError("--init paper and --dropout-per-head are GAT's: GATv2's "
                                 "layers have no single per-head projection")
            config.init = 'pyg'  # the layers' own, also where the GAT recipe has 'paper'
        if config.residual and config.dropout_per_head:
            raise ValueError(f"--dropout-per-head does not go with a residual connection "
                             f"(the {dataset} recipe's or --residual): the skip connection "
                             f"belongs to no head")
        return config


# The recipe for Tolokers and Minesweeper. Their features are a few counts and fractions,
# not bag-of-words (kept as given), and the label depends more on a node's own features
# than on its neighbours' (heterophily), so each layer gets a residual connection, as in
# Platonov et al. (2023), whose GAT (5 such layers of 512 units, with layer norm) reaches
# 83.7 ROC-AUC on Tolokers; lighter dropout and no L2, as there, and a larger step. On
# Tolokers split 0, test ROC-AUC at the best validation epoch, 8 x 8 heads: the paper's
# recipe 68.0 (100 epochs); dropout 0.2 without L2 74.4 (300); plus residual 79.2 (300,
# lr 0.005) and 82.5 (600, lr 0.02). 8 x 32 heads (lr 0.01) gave 80.6 after 400 epochs,
# at twice the time per epoch.
HETEROPHILOUS_RECIPE: Dict[str, Any] = {
    'normalize_features': False, 'residual': True, 'dropout': 0.2, 'weight_decay': 0.0,
    'lr': 0.02,
}


@dataclass
class RunResult:
    """One trained run; ``test_score``/``val_score`` are the values of ``metric`` (for
    accuracy, equal to ``test_acc``/``val_acc``) at the kept epoch."""
    seed: int
    metric: str
    test_score: float
    val_score: float
    test_acc: float
    val_acc: float
    val_loss: float
    epochs: int
    best_epoch: int
    seconds: float
    history: Dict[str, List[float]] = field(default_factory=dict)


class EarlyStopping:
    """The GAT paper's rule (its reference code): an epoch whose validation score (accuracy
    in the paper; higher is better) or loss is at least as good as the best so far resets
    the patience counter; the model is kept when both are. Training stops after
    ``patience`` epochs without either."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best_score, self.best_loss = -math.inf, math.inf
        self.bad_epochs = 0
        self.best_epoch = 0
        self.best_state: Optional[Dict[str, torch.Tensor]] = None

    def step(self, epoch: int, val_score: float, val_loss: float,
             model: torch.nn.Module) -> bool:
        """Records one epoch; returns whether to stop."""
        if val_score >= self.best_score or val_loss <= self.best_loss:
            if val_score >= self.best_score and val_loss <= self.best_loss:
                self.best_epoch = epoch
                self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.best_score = max(self.best_score, val_score)
            self.best_loss = min(self.best_loss, val_loss)
            self.bad_epochs = 0
            return False
        self.bad_epochs += 1
        return self.bad_epochs >= self.patience

    def state_dict(self) -> Dict[str, Any]:
        return dict(vars(self))

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        vars(self).update(state)


def build_model(config: TrainConfig, num_features: int, num_classes: int) -> torch.nn.Module:
    from gat_pyg.nn.conv import attention_layer
    from gat_pyg.nn.models import GAT
    return GAT(num_features, config.hidden, num_classes, config.dropout,
               config.negative_slope, config.heads, out_heads=config.out_heads,
               conv=attention_layer(config.conv, config.layer), residual=config.residual,
               dropout_per_head=config.dropout_per_head, init=config.init,
               v2=config.conv == 'gatv2')


def prepare_data(config: TrainConfig, data: Data) -> Data:
    """The recipe's preprocessing: row-normalised features (if configured)."""
    if config.normalize_features:
        from torch_geometric.transforms import NormalizeFeatures
        data = NormalizeFeatures()(data.clone())
    return data


def inference_batches(config: TrainConfig, data: Data) -> Optional[List[Data]]:
    """How runs of ``config`` are evaluated: ``None`` for the full-batch forward, or for
    ``--loader neighbor`` the batches of :meth:`~gat_pyg.nn.models.GAT.inference`
    (``config.eval_batch_size`` target nodes each, with their complete neighbourhoods),
    so that graphs too large for one forward can be evaluated too. Each batch runs the
    first layer on its whole neighbourhood's input rows, so smaller batches repeat more of
    that work (Coauthor-Physics, 8415 features: 20 s per evaluation with 1024 targets per
    batch, 4.5 s with 16384, 0.8 s for one full-batch forward).

    The batches are loaded once and kept (the graph's structure once more, batched), so
    that each evaluation reuses them and the layers' sorted graphs cached for their
    ``edge_index`` tensors (see :class:`~gat_pyg.ops.graph.GraphCache`)."""
    if config.loader == 'full':
        return None
    return list(full_neighborhood_loader(data.edge_index, data.num_nodes,
                                         config.eval_batch_size))


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: Data, metric: str = 'accuracy',
             batches: Optional[Iterable[Data]] = None) -> Dict[str, float]:
    """Loss, accuracy and ``metric`` (if not accuracy) on each of the train/val/test masks,
    in eval mode: ``{split}_loss``, ``{split}_acc`` and e.g. ``{split}_roc_auc``
    (:func:`~gat_pyg.metrics.metric_key`). The model runs full-batch, or, with ``batches``
    (:func:`inference_batches`), layer by layer over them."""
    model.eval()
    if batches is None:
        log_probs = model(data.x, data.edge_index)
    else:
        log_probs = model.inference(data.x, batches)
    metrics = {}
    for split in ('train', 'val', 'test'):
        mask = data[f'{split}_mask']
        metrics[f'{split}_loss'] = float(F.nll_loss(log_probs[mask], data.y[mask]))
        metrics[f'{split}_acc'] = accuracy(log_probs[mask], data.y[mask])
        if metric != 'accuracy':
            metrics[f'{split}_{metric_key(metric)}'] = score(metric, log_probs[mask],
                                                             data.y[mask])
    return metrics


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: Tensor,
               edge_index: Adj, y: Tensor, targets: Union[Tensor, slice]) -> float:
    r"""One optimizer step: the model's forward over the graph ``(x, edge_index)`` in
    training mode, the NLL loss on the nodes ``targets``, backward and ``optimizer.step()``.

    The one step of both kinds of training: full-batch, the whole graph with
    ``targets=data.train_mask``; mini-batch, a sampled subgraph with its seed nodes,
    ``targets=slice(0, batch.batch_size)`` (:func:`neighbor_epoch`). For data-parallel
    training, pass the wrapped model (e.g. ``DistributedDataParallel``): gradients are
    then averaged across processes in ``backward``.

    Args:
        model (torch.nn.Module): Maps ``(x, edge_index)`` to log-probabilities
            :math:`(N, C)`.
        optimizer (torch.optim.Optimizer): The optimizer of ``model``'s parameters.
        x (torch.Tensor): Node features :math:`(N, F)`.
        edge_index (torch.Tensor or SparseTensor): The graph.
        y (torch.Tensor): Labels :math:`(N)`.
        targets (torch.Tensor or slice): The nodes of the loss (a mask, indices or slice).

    Returns:
        float: The loss (mean over ``targets``).
    """
    model.train()
    optimizer.zero_grad()
    out = model(x, edge_index)
    loss = F.nll_loss(out[targets], y[targets])
    loss.backward()
    optimizer.step()
    return loss.item()


def neighbor_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                   loader: NeighborLoader, epoch: int) -> float:
    """One mini-batch epoch: :func:`train_step` on each batch of ``loader`` (a
    :func:`~gat_pyg.minibatch.seed_node_loader`, set to ``epoch``), the loss on each
    batch's seed nodes. Returns the mean loss over the epoch's seed nodes."""
    loader.batch_sampler.set_epoch(epoch)
    total, count = 0.0, 0
    for batch in loader:
        loss = train_step(model, optimizer, batch.x, batch.edge_index, batch.y,
                          slice(0, batch.batch_size))
        total += loss * batch.batch_size
        count += batch.batch_size
    return total / count


def checkpoint_path(directory: Path, seed: int) -> Path:
    """The checkpoint file of the run with ``seed`` in ``directory``."""
    return Path(directory) / f'run-seed{seed}.pt'


def _save_atomically(state: Dict[str, Any], path: Path) -> None:
    # A kill while writing must not leave a truncated checkpoint behind.
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + '.partial')
    torch.save(state, partial)
    os.replace(partial, path)


def _upgrade_accuracy_checkpoint(state: Dict[str, Any]) -> None:
    """Renames, in place, the entries of a run checkpoint written when accuracy was the only
    validation score to those of the score of any metric."""
    state['stopping']['best_score'] = state['stopping'].pop('best_acc')
    for history in [state['history']] + ([state['result']['history']] if state['result']
                                         else []):
        history['val_score'] = history.pop('val_acc')
    if state['result'] is not None:
        state['result'].update(metric='accuracy', test_score=state['result']['test_acc'],
                               val_score=state['result']['val_acc'])


def load_checkpoint(path: Path, config: Optional[TrainConfig] = None) -> Dict[str, Any]:
    """Reads a run checkpoint; with ``config``, checks that it was made with that recipe."""
    state = torch.load(path, map_location='cpu', weights_only=True)
    if 'best_acc' in state.get('stopping', {}):
        _upgrade_accuracy_checkpoint(state)
    if config is not None:
        # A setting missing from an older checkpoint was added since, with a default that
        # keeps the old behaviour.
        state['config'] = {**asdict(type(config)()), **state['config']}
    if config is not None and state['config'] != asdict(config):
        # Both ways: a checkpoint may also hold a setting this version no longer has.
        wanted = asdict(config)
        changed = sorted(k for k in wanted.keys() | state['config'].keys()
                         if state['config'].get(k) != wanted.get(k))
        raise ValueError(f"Checkpoint '{path}' was made with other settings ({', '.join(changed)}"
                         f" differ); use another --checkpoint folder or the same flags")
    return state


def train_run(config: TrainConfig, data: Data, num_classes: int, seed: int,
              progress: bool = True, checkpoint: Optional[Path] = None,
              checkpoint_every: int = 10,
              distributed: Optional[DistributedContext] = None) -> RunResult:
    """Trains one model from ``seed`` with :class:`EarlyStopping` and restores its kept
    epoch.

    An epoch is one full-batch :func:`train_step` (``config.loader == 'full'``) or a
    :func:`neighbor_epoch` over ``config.batch_size`` seed nodes per batch with
    ``config.num_neighbors`` sampled neighbours per hop (``'neighbor'``). Every epoch ends
    with a validation over the whole graph (:func:`evaluate`; for mini-batch training by
    layer-wise inference, without sampling) for :class:`EarlyStopping` on
    ``config.metric`` and the loss.

    With ``checkpoint`` (a folder), the run's state (model, optimizer, epoch, torch's RNG
    state, early-stopping state, history) is saved every ``checkpoint_every`` epochs and at
    the end; calling again with the same folder resumes from the last save and ends with
    the same weights and metrics, bit for bit, as an uninterrupted run (mini-batches are
    drawn from the seed and the epoch, and sampled with torch's RNG). A finished run is not
    trained again.

    With ``distributed`` (every rank of a ``torchrun`` job calls this alike; mini-batch
    training only), the model is a :class:`~torch.nn.parallel.DistributedDataParallel`
    replica and rank :math:`r` trains on its share of each epoch's seed nodes
    (:func:`~gat_pyg.minibatch.epoch_seed_nodes`), sampling with torch's RNG seeded with
    ``seed * world_size + r``; the epoch loss is the mean of the ranks'. Every rank
    validates (the replicas are identical, so they stop alike); rank 0 alone writes the
    checkpoint, which holds every rank's RNG state and must be readable by all ranks on
    resume, with the same number of processes.
    """
    path = checkpoint_path(checkpoint, seed) if checkpoint is not None else None
    state = load_checkpoint(path, config) if path is not None and path.is_file() else None
    if state is not None and state.get('result') is not None:
        return RunResult(**state['result'])

    if config.loader not in ('full', 'neighbor'):
        raise ValueError(f"Unknown loader '{config.loader}' (choose 'full' or 'neighbor')")
    rank, world_size = (0, 1) if distributed is None else (distributed.rank,
                                                          distributed.world_size)
    if distributed is not None and config.loader != 'neighbor':
        raise ValueError("Data-parallel training shares out the seed nodes of mini-batches: "
                         "use it with --loader neighbor")
    if state is not None and state.get('world_size', 1) != world_size:
        raise ValueError(f"Checkpoint '{path}' was made by {state.get('world_size', 1)} "
                         f"process(es), not {world_size}: resume with as many")
    torch.manual_seed(seed)
    model = build_model(config, data.num_features, num_classes)
    replica = model if distributed is None else wrap_model(model, distributed)
    if distributed is not None:
        torch.manual_seed(seed * world_size + rank)  # each rank samples its own neighbours
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    if config.loader == 'neighbor':
        if len(config.num_neighbors) != model.num_layers:
            raise ValueError(f'--num-neighbors needs one count per layer ({model.num_layers}'
                             f'), got {len(config.num_neighbors)}')
        train_loader = seed_node_loader(data, data.train_mask.nonzero().view(-1),
                                        config.num_neighbors, config.batch_size, seed, rank,
                                        world_size)

        def run_epoch(epoch: int) -> float:
            loss = neighbor_epoch(replica, optimizer, train_loader, epoch)
            return loss if distributed is None else statistics.fmean(
                all_gather_objects(loss))
    else:
        def run_epoch(epoch: int) -> float:
            return train_step(model, optimizer, data.x, data.edge_index, data.y,
                              data.train_mask)
    eval_batches = inference_batches(config, data)
    score_name = f'val_{metric_key(config.metric)}'
    stopping = EarlyStopping(config.patience)
    history: Dict[str, List[float]] = {'train_loss': [], 'val_loss': [], 'val_score': []}
    first_epoch, seconds = 1, 0.0
    if state is not None:
        model.load_state_dict(state['model'])
        optimizer.load_state_dict(state['optimizer'])
        stopping.load_state_dict(state['stopping'])
        history, seconds = state['history'], state['seconds']
        torch.set_rng_state(state['rng'] if distributed is None else state['rng_ranks'][rank])
        first_epoch = state['epoch'] + 1

    def snapshot(epoch: int, result: Optional[RunResult] = None) -> None:
        if path is None:
            return
        rng_ranks = None if distributed is None else all_gather_objects(torch.get_rng_state())
        if rank == 0:
            _save_atomically({
                'config': asdict(config), 'seed': seed, 'epoch': epoch,
                'model': model.state_dict(), 'optimizer': optimizer.state_dict(),
                'stopping': stopping.state_dict(), 'history': history,
                'rng': torch.get_rng_state(), 'seconds': seconds + time.perf_counter() - start,
                'num_features': data.num_features, 'num_classes': num_classes,
                'result': None if result is None else asdict(result),
                'world_size': world_size, 'rng_ranks': rng_ranks,
            }, path)

    start = time.perf_counter()
    bar = tqdm(range(first_epoch, config.epochs + 1), desc=f'{config.dataset} seed {seed}',
               disable=not progress or rank != 0, leave=False, initial=first_epoch - 1,
               total=config.epochs)
    epoch = first_epoch - 1
    for epoch in bar:
        loss = run_epoch(epoch)
        metrics = evaluate(model, data, config.metric, eval_batches)
        history['train_loss'].append(loss)
        history['val_loss'].append(metrics['val_loss'])
        history['val_score'].append(metrics[score_name])
        bar.set_postfix({'loss': f'{loss:.4f}', score_name: f'{metrics[score_name]:.4f}'})
        if stopping.step(epoch, metrics[score_name], metrics['val_loss'], model):
            break
        if epoch % checkpoint_every == 0:
            snapshot(epoch)
    bar.close()
    if stopping.best_state is None:
        raise ValueError(f'no epoch ran (epochs={config.epochs})')
    model.load_state_dict(stopping.best_state)
    final = evaluate(model, data, config.metric, eval_batches)
    key = metric_key(config.metric)
    result = RunResult(seed=seed, metric=config.metric, test_score=final[f'test_{key}'],
                       val_score=final[f'val_{key}'], test_acc=final['test_acc'],
                       val_acc=final['val_acc'], val_loss=final['val_loss'], epochs=epoch,
                       best_epoch=stopping.best_epoch,
                       seconds=seconds + time.perf_counter() - start, history=history)
    snapshot(epoch, result)
    return result


def versions() -> Dict[str, str]:
    import torch_geometric
    return {'gat_pyg': gat_pyg.__version__, 'torch': torch.__version__,
            'torch_geometric': torch_geometric.__version__}


def summarize(config: TrainConfig, runs: List[RunResult],
              split: Optional[Dict[str, Any]] = None) -> dict:
    """The results document written by ``--out``: ``config``, ``runs``, ``test_acc_mean``,
    ``test_acc_std``, ``versions``, the random ``split`` if any, and for a metric other than
    accuracy, ``metric`` with ``test_score_mean`` and ``test_score_std``."""
    summary = {
        'config': asdict(config),
        'runs': [{k: v for k, v in asdict(run).items() if k != 'history'} for run in runs],
        **_mean_and_std('test_acc', [run.test_acc for run in runs]),
        'versions': versions(),
    }
    if config.metric != 'accuracy':
        summary['metric'] = config.metric
        summary.update(_mean_and_std('test_score', [run.test_score for run in runs]))
    if split is not None:
        summary['split'] = split
    return summary


def _mean_and_std(name: str, values: List[float]) -> Dict[str, float]:
    values = torch.tensor(values, dtype=torch.float64)
    return {f'{name}_mean': float(values.mean()),
            f'{name}_std': float(values.std(unbiased=False)) if len(values) > 1 else 0.0}


def describe_score(metric: str, scores: List[float]) -> str:
    """``'test accuracy over 3 run(s): 81.2 +- 0.4'`` (percent)."""
    stats = _mean_and_std('score', scores)
    return (f'test {METRIC_NAMES[metric]} over {len(scores)} run(s): '
            f"{100 * stats['score_mean']:.1f} +- {100 * stats['score_std']:.1f}")
