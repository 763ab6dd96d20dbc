r"""Graph classification by stratified :math:`k`-fold cross-validation, as in the TU
benchmark literature, resumable from checkpoints: the engine of
``gat-pyg train --task graph``.

Each fold's test graphs are never looked at before the fold's model is chosen: a stratified
part of its training graphs (``val_fraction``) is held out as validation, the model is
trained for a fixed number of epochs, and the epoch with the best validation accuracy
(ties: lower validation loss) is kept and tested. The result is the mean and standard
deviation of the folds' test accuracies. The folds are drawn from a seeded generator, so
they are the same on every machine and are saved with the results.
"""
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import Batch, Data, Dataset
from torch_geometric.loader import DataLoader
from tqdm import tqdm

from gat_pyg.data import load_graph_dataset
from gat_pyg.nn.models import GraphGAT
from gat_pyg.training import _save_atomically, load_checkpoint, versions


@dataclass
class GraphTrainConfig:
    """One cross-validation recipe."""
    dataset: str = 'MUTAG'
    layer: str = 'ours'  # 'ours' (gat_pyg.nn's layer) or 'pyg' (torch_geometric's)
    conv: str = 'gat'  # the attention layer: 'gat' (GATConv) or 'gatv2' (GATv2Conv)
    readout: str = 'attention'  # 'attention' (GlobalAttentionPool) or 'mean'
    folds: int = 10
    seed: int = 0  # draws the folds, the validation split, the weights and the batches
    val_fraction: float = 0.1  # of each fold's training graphs, held out for selection
    degree_features: bool = True  # one-hot node degrees appended to the node features
    node_attributes: bool = False  # continuous node attributes (standardised) as features
    epochs: int = 100
    batch_size: int = 32
    num_layers: int = 3
    hidden: int = 8  # channels per head
    heads: int = 4
    readout_heads: int = 1
    dropout: float = 0.5  # in the classifier
    lr: float = 0.01
    weight_decay: float = 0.0

    @classmethod
    def with_overrides(cls, **overrides: Any) -> 'GraphTrainConfig':
        """The default recipe with ``overrides`` (``None`` values ignored) applied."""
        return cls(**{key: value for key, value in overrides.items() if value is not None})


@dataclass
class FoldResult:
    """One fold: test accuracy of the kept epoch, its validation accuracy and loss, and
    the per-epoch history (``train_loss``, ``val_loss``, ``val_acc``)."""
    fold: int
    test_acc: float
    val_acc: float
    val_loss: float
    best_epoch: int
    epochs: int
    seconds: float
    history: Dict[str, List[float]] = field(default_factory=dict)


class FoldSplit(NamedTuple):
    """The graph indices of one fold: training, validation (held out of the training
    folds) and test."""
    train: Tensor
    val: Tensor
    test: Tensor


def _class_blocks(labels: Tensor, generator: torch.Generator) -> Tensor:
    """A permutation of ``range(len(labels))`` that lists the members of class 0 in random
    order, then those of class 1, and so on."""
    order = []
    for cls in labels.unique(sorted=True):
        members = (labels == cls).nonzero().view(-1)
        order.append(members[torch.randperm(members.numel(), generator=generator)])
    return torch.cat(order)


def stratified_folds(labels: Tensor, num_folds: int, generator: torch.Generator) -> Tensor:
    r"""The fold (in :math:`0, \ldots, k - 1`) of each example, such that every fold holds
    :math:`\lfloor n_c / k \rfloor` or :math:`\lceil n_c / k \rceil` examples of each class
    :math:`c` and :math:`\lfloor n / k \rfloor` or :math:`\lceil n / k \rceil` in all:
    the members of each class are shuffled, the classes laid end to end and the folds dealt
    out in turn."""
    if not 2 <= num_folds <= labels.numel():
        raise ValueError(f'Cannot split {labels.numel()} examples into {num_folds} folds')
    fold = torch.empty_like(labels, dtype=torch.long)
    fold[_class_blocks(labels, generator)] = torch.arange(labels.numel()) % num_folds
    return fold


def stratified_holdout(labels: Tensor, fraction: float, generator: torch.Generator) -> Tensor:
    r"""A mask of :math:`\lfloor f n \rfloor` examples, about :math:`f n_c` of each class
    :math:`c` (within one): every :math:`1/f`-th example of the shuffled classes laid end
    to end."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"'val_fraction' must lie in (0, 1) (got {fraction})")
    position = torch.arange(labels.numel(), dtype=torch.float64)
    held_out = torch.empty_like(labels, dtype=torch.bool)
    held_out[_class_blocks(labels, generator)] = (
        torch.floor((position + 1) * fraction) > torch.floor(position * fraction))
    return held_out


def cross_validation_splits(labels: Tensor, num_folds: int, val_fraction: float,
                            seed: int) -> List[FoldSplit]:
    """The ``num_folds`` stratified folds of ``labels``, each with a stratified validation
    part held out of its training graphs, drawn from one generator seeded with ``seed``."""
    labels = labels.view(-1)
    generator = torch.Generator().manual_seed(seed)
    fold_of = stratified_folds(labels, num_folds, generator)
    splits = []
    for fold in range(num_folds):
        test = (fold_of == fold).nonzero().view(-1)
        rest = (fold_of != fold).nonzero().view(-1)
        val_mask = stratified_holdout(labels[rest], val_fraction, generator)
        splits.append(FoldSplit(train=rest[~val_mask], val=rest[val_mask], test=test))
    return splits


def load_data(config: GraphTrainConfig, root: Optional[os.PathLike] = None) -> Dataset:
    """The dataset of ``config``, with its node features (see
    :func:`gat_pyg.data.load_graph_dataset`)."""
    return load_graph_dataset(config.dataset, root, config.degree_features,
                              config.node_attributes)[1]


def build_graph_model(config: GraphTrainConfig, num_features: int, num_classes: int,
                      edge_dim: Optional[int] = None) -> GraphGAT:
    from gat_pyg.nn.conv import attention_layer
    return GraphGAT(num_features, config.hidden, num_classes, num_layers=config.num_layers,
                    heads=config.heads, readout=config.readout,
                    readout_heads=config.readout_heads, edge_dim=edge_dim,
                    dropout=config.dropout, conv=attention_layer(config.conv, config.layer))


def edge_dim_of(dataset: Dataset) -> Optional[int]:
    """The number of edge features of ``dataset`` (``None`` if it has none)."""
    return dataset.num_edge_features or None


def _forward(model: GraphGAT, batch: Batch) -> Tensor:
    return model(batch.x, batch.edge_index, batch.batch, batch.edge_attr, batch.num_graphs)


@torch.no_grad()
def evaluate(model: GraphGAT, batches: Sequence[Batch]) -> Dict[str, float]:
    """Mean cross-entropy and accuracy over the graphs of ``batches`` (eval mode)."""
    model.eval()
    loss, correct, count = 0.0, 0, 0
    for batch in batches:
        logits = _forward(model, batch)
        loss += float(F.cross_entropy(logits, batch.y, reduction='sum'))
        correct += int((logits.argmax(-1) == batch.y).sum())
        count += batch.num_graphs
    return {'loss': loss / count, 'acc': correct / count}


@torch.no_grad()
def readout_attention(model: GraphGAT,
                      graphs: Sequence[Data]) -> Tuple[List[Tensor], List[int]]:
    r"""The attention readout's :math:`\beta` over the nodes of each of ``graphs``
    (averaged over the readout's gates; each sums to one) and the predicted classes, in
    eval mode."""
    model.eval()
    batch = Batch.from_data_list(list(graphs))
    logits, beta = model(batch.x, batch.edge_index, batch.batch, batch.edge_attr,
                         batch.num_graphs, return_attention_weights=True)
    return list(beta.mean(dim=-1).split(batch.ptr.diff().tolist())), logits.argmax(-1).tolist()


def _eval_batches(dataset: Dataset, index: Tensor) -> List[Batch]:
    return list(DataLoader(dataset[index], batch_size=256))


def evaluate_kept_model(config: GraphTrainConfig, dataset: Dataset, split: FoldSplit,
                        weights: Dict[str, Tensor]) -> Dict[str, float]:
    """Rebuilds the model of ``config`` with ``weights`` (a fold's kept state) and returns
    its ``val_loss``, ``val_acc``, ``test_loss`` and ``test_acc`` on ``split``."""
    model = build_graph_model(config, dataset.num_features, dataset.num_classes,
                              edge_dim_of(dataset))
    model.load_state_dict(weights)
    metrics = {}
    for part in ('val', 'test'):
        for key, value in evaluate(model, _eval_batches(dataset, getattr(split, part))).items():
            metrics[f'{part}_{key}'] = value
    return metrics


def fold_checkpoint_path(directory: Path, fold: int) -> Path:
    """The checkpoint file of ``fold`` in ``directory``."""
    return Path(directory) / f'fold-{fold}.pt'


def _is_better(val_acc: float, val_loss: float, best_acc: float, best_loss: float) -> bool:
    return val_acc > best_acc or (val_acc == best_acc and val_loss < best_loss)


def train_fold(config: GraphTrainConfig, dataset: Dataset, split: FoldSplit, fold: int,
               progress: bool = True, checkpoint: Optional[Path] = None,
               checkpoint_every: int = 10) -> Tuple[FoldResult, GraphGAT]:
    """Trains fold ``fold`` for ``config.epochs`` epochs and returns its result and the
    model with the kept weights (the epoch of best validation accuracy, ties broken by the
    lower validation loss), tested on the fold's test graphs.

    With ``checkpoint`` (a folder), the fold's state (model, optimizer, epoch, torch's and
    the batch shuffler's RNG states, the kept weights, history) is saved every
    ``checkpoint_every`` epochs and at the end; calling again with the same folder resumes
    from the last save and ends with the same weights and metrics, bit for bit, as an
    uninterrupted run. A finished fold is not trained again. A checkpoint made with another
    recipe raises :class:`ValueError`.
    """
    num_features, num_classes = dataset.num_features, dataset.num_classes
    path = fold_checkpoint_path(checkpoint, fold) if checkpoint is not None else None
    state = load_checkpoint(path, config) if path is not None and path.is_file() else None
    if state is not None and state['result'] is not None:
        model = build_graph_model(config, num_features, num_classes, edge_dim_of(dataset))
        model.load_state_dict(state['best']['state'])
        return FoldResult(**state['result']), model

    seed = config.seed * config.folds + fold  # distinct for every (seed, fold)
    torch.manual_seed(seed)
    model = build_graph_model(config, num_features, num_classes, edge_dim_of(dataset))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    shuffle = torch.Generator().manual_seed(seed)
    # A list of the graphs (the dataset's transform applied once) collates much faster.
    loader = DataLoader(list(dataset[split.train]), batch_size=config.batch_size,
                        shuffle=True, generator=shuffle)
    val_batches = _eval_batches(dataset, split.val)
    history: Dict[str, List[float]] = {'train_loss': [], 'val_loss': [], 'val_acc': []}
    best: Dict[str, Any] = {'epoch': 0, 'acc': -1.0, 'loss': float('inf'), 'state': None}
    first_epoch, seconds = 1, 0.0
    if state is not None:
        model.load_state_dict(state['model'])
        optimizer.load_state_dict(state['optimizer'])
        torch.set_rng_state(state['rng'])
        shuffle.set_state(state['shuffle_rng'])
        history, best, seconds = state['history'], state['best'], state['seconds']
        first_epoch = state['epoch'] + 1

    def snapshot(epoch: int, result: Optional[FoldResult] = None) -> None:
        if path is not None:
            _save_atomically({
                'config': asdict(config), 'fold': fold, 'epoch': epoch,
                'model': model.state_dict(), 'optimizer': optimizer.state_dict(),
                'rng': torch.get_rng_state(), 'shuffle_rng': shuffle.get_state(),
                'history': history, 'best': best,
                'seconds': seconds + time.perf_counter() - start,
                'result': None if result is None else asdict(result),
            }, path)

    start = time.perf_counter()
    bar = tqdm(range(first_epoch, config.epochs + 1), desc=f'{config.dataset} fold {fold}',
               disable=not progress, leave=False, initial=first_epoch - 1, total=config.epochs)
    for epoch in bar:
        model.train()
        train_loss = 0.0
        for batch in loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(_forward(model, batch), batch.y)
            loss.backward()
            optimizer.step()
            train_loss += loss.item() * batch.num_graphs
        metrics = evaluate(model, val_batches)
        history['train_loss'].append(train_loss / len(split.train))
        history['val_loss'].append(metrics['loss'])
        history['val_acc'].append(metrics['acc'])
        if _is_better(metrics['acc'], metrics['loss'], best['acc'], best['loss']):
            best = {'epoch': epoch, 'acc': metrics['acc'], 'loss': metrics['loss'],
                    'state': {k: v.detach().clone() for k, v in model.state_dict().items()}}
        bar.set_postfix(loss=f'{history["train_loss"][-1]:.4f}',
                        val_acc=f"{metrics['acc']:.4f}")
        if epoch % checkpoint_every == 0 and epoch < config.epochs:
            snapshot(epoch)
    bar.close()
    if best['state'] is None:
        raise ValueError(f'no epoch ran (epochs={config.epochs})')
    model.load_state_dict(best['state'])
    test = evaluate(model, _eval_batches(dataset, split.test))
    result = FoldResult(fold=fold, test_acc=test['acc'], val_acc=best['acc'],
                        val_loss=best['loss'], best_epoch=best['epoch'], epochs=config.epochs,
                        seconds=seconds + time.perf_counter() - start, history=history)
    snapshot(config.epochs, result)
    return result, model


def split_document(config: GraphTrainConfig, splits: Sequence[FoldSplit]) -> Dict[str, Any]:
    """The fold assignment as saved with the results: each fold's test and validation
    graph indices (the rest of the dataset is the fold's training set)."""
    return {'seed': config.seed, 'folds': config.folds, 'val_fraction': config.val_fraction,
            'test': [split.test.tolist() for split in splits],
            'val': [split.val.tolist() for split in splits]}


def summarize_folds(config: GraphTrainConfig, results: Sequence[FoldResult],
                    splits: Sequence[FoldSplit]) -> Dict[str, Any]:
    """The results document written by ``--out``: recipe, per-fold results, mean and
    (population) standard deviation of the test accuracy, versions and folds."""
    accs = torch.tensor([result.test_acc for result in results], dtype=torch.float64)
    return {
        'config': asdict(config),
        'folds': [{k: v for k, v in asdict(result).items() if k != 'history'}
                  for result in results],
        'test_acc_mean': float(accs.mean()),
        'test_acc_std': float(accs.std(unbiased=False)) if len(results) > 1 else 0.0,
        'versions': versions(),
        'split': split_document(config, splits),
    }
