"""Full-batch node classification with the GAT paper's early stopping, resumable from
checkpoints: the engine of ``gat-pyg train`` and ``gat-pyg evaluate``."""
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch_geometric.data import Data
from tqdm import tqdm

import gat_pyg


@dataclass
class TrainConfig:
    """One training recipe. Defaults are the GAT paper's Cora/CiteSeer recipe."""
    dataset: str = 'Cora'
    layer: str = 'ours'  # 'ours' (gat_pyg.nn.GATConv) or 'pyg' (torch_geometric's)
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

    @classmethod
    def for_dataset(cls, dataset: str, **overrides) -> 'TrainConfig':
        """The paper's recipe for ``dataset`` (PubMed: 8 averaged output heads, lr 0.01,
        L2 1e-3), with ``overrides`` (``None`` values ignored) applied on top."""
        config = cls(dataset=dataset)
        if dataset.lower() == 'pubmed':
            config.out_heads, config.lr, config.weight_decay = 8, 0.01, 1e-3
        for key, value in overrides.items():
            if value is not None:
                setattr(config, key, value)
        return config


@dataclass
class RunResult:
    seed: int
    test_acc: float
    val_acc: float
    val_loss: float
    epochs: int
    best_epoch: int
    seconds: float
    history: Dict[str, List[float]] = field(default_factory=dict)


class EarlyStopping:
    """The GAT paper's rule (its reference code): an epoch whose validation accuracy or loss
    is at least as good as the best so far resets the patience counter; the model is kept
    when both are. Training stops after ``patience`` epochs without either."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best_acc, self.best_loss = -math.inf, math.inf
        self.bad_epochs = 0
        self.best_epoch = 0
        self.best_state: Optional[Dict[str, torch.Tensor]] = None

    def step(self, epoch: int, val_acc: float, val_loss: float, model: torch.nn.Module) -> bool:
        """Records one epoch; returns whether to stop."""
        if val_acc >= self.best_acc or val_loss <= self.best_loss:
            if val_acc >= self.best_acc and val_loss <= self.best_loss:
                self.best_epoch = epoch
                self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.best_acc = max(self.best_acc, val_acc)
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
    from torch_geometric.nn import GATConv as PyGGATConv

    from gat_pyg.nn.models import GAT
    if config.layer not in ('ours', 'pyg'):
        raise ValueError(f"Unknown layer '{config.layer}' (choose 'ours' or 'pyg')")
    conv = gat_pyg.nn.GATConv if config.layer == 'ours' else PyGGATConv
    return GAT(num_features, config.hidden, num_classes, config.dropout,
               config.negative_slope, config.heads, out_heads=config.out_heads, conv=conv)


def prepare_data(config: TrainConfig, data: Data) -> Data:
    """The recipe's preprocessing: row-normalised features (if configured)."""
    if config.normalize_features:
        from torch_geometric.transforms import NormalizeFeatures
        data = NormalizeFeatures()(data.clone())
    return data


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: Data) -> Dict[str, float]:
    """Loss and accuracy on each of the train/val/test masks (eval mode)."""
    model.eval()
    log_probs = model(data.x, data.edge_index)
    metrics = {}
    for split in ('train', 'val', 'test'):
        mask = data[f'{split}_mask']
        metrics[f'{split}_loss'] = float(F.nll_loss(log_probs[mask], data.y[mask]))
        metrics[f'{split}_acc'] = float(
            (log_probs[mask].argmax(-1) == data.y[mask]).float().mean())
    return metrics


def checkpoint_path(directory: Path, seed: int) -> Path:
    """The checkpoint file of the run with ``seed`` in ``directory``."""
    return Path(directory) / f'run-seed{seed}.pt'


def _save_atomically(state: Dict[str, Any], path: Path) -> None:
    # A kill while writing must not leave a truncated checkpoint behind.
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + '.partial')
    torch.save(state, partial)
    os.replace(partial, path)


def load_checkpoint(path: Path, config: Optional[TrainConfig] = None) -> Dict[str, Any]:
    """Reads a run checkpoint; with ``config``, checks that it was made with that recipe."""
    state = torch.load(path, map_location='cpu', weights_only=True)
    if config is not None and state['config'] != asdict(config):
        changed = sorted(k for k, v in asdict(config).items() if state['config'].get(k) != v)
        raise ValueError(f"Checkpoint '{path}' was made with other settings ({', '.join(changed)}"
                         f" differ); use another --checkpoint folder or the same flags")
    return state


def train_run(config: TrainConfig, data: Data, num_classes: int, seed: int,
              progress: bool = True, checkpoint: Optional[Path] = None,
              checkpoint_every: int = 10) -> RunResult:
    """Trains one model from ``seed`` with :class:`EarlyStopping` and restores its kept
    epoch.

    With ``checkpoint`` (a folder), the run's state (model, optimizer, epoch, torch's RNG
    state, early-stopping state, history) is saved every ``checkpoint_every`` epochs and at
    the end; calling again with the same folder resumes from the last save and ends with
    the same weights and metrics, bit for bit, as an uninterrupted run. A finished run is
    not trained again.
    """
    path = checkpoint_path(checkpoint, seed) if checkpoint is not None else None
    state = load_checkpoint(path, config) if path is not None and path.is_file() else None
    if state is not None and state.get('result') is not None:
        return RunResult(**state['result'])

    torch.manual_seed(seed)
    model = build_model(config, data.num_features, num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    stopping = EarlyStopping(config.patience)
    history: Dict[str, List[float]] = {'train_loss': [], 'val_loss': [], 'val_acc': []}
    first_epoch, seconds = 1, 0.0
    if state is not None:
        model.load_state_dict(state['model'])
        optimizer.load_state_dict(state['optimizer'])
        stopping.load_state_dict(state['stopping'])
        history, seconds = state['history'], state['seconds']
        torch.set_rng_state(state['rng'])
        first_epoch = state['epoch'] + 1

    def snapshot(epoch: int, result: Optional[RunResult] = None) -> None:
        if path is not None:
            _save_atomically({
                'config': asdict(config), 'seed': seed, 'epoch': epoch,
                'model': model.state_dict(), 'optimizer': optimizer.state_dict(),
                'stopping': stopping.state_dict(), 'history': history,
                'rng': torch.get_rng_state(), 'seconds': seconds + time.perf_counter() - start,
                'num_features': data.num_features, 'num_classes': num_classes,
                'result': None if result is None else asdict(result),
            }, path)

    start = time.perf_counter()
    bar = tqdm(range(first_epoch, config.epochs + 1), desc=f'{config.dataset} seed {seed}',
               disable=not progress, leave=False, initial=first_epoch - 1, total=config.epochs)
    epoch = first_epoch - 1
    for epoch in bar:
        model.train()
        optimizer.zero_grad()
        out = model(data.x, data.edge_index)
        loss = F.nll_loss(out[data.train_mask], data.y[data.train_mask])
        loss.backward()
        optimizer.step()

        metrics = evaluate(model, data)
        history['train_loss'].append(loss.item())
        history['val_loss'].append(metrics['val_loss'])
        history['val_acc'].append(metrics['val_acc'])
        bar.set_postfix(loss=f'{loss.item():.4f}', val_acc=f"{metrics['val_acc']:.4f}")
        if stopping.step(epoch, metrics['val_acc'], metrics['val_loss'], model):
            break
        if epoch % checkpoint_every == 0:
            snapshot(epoch)
    bar.close()
    if stopping.best_state is None:
        raise ValueError(f'no epoch ran (epochs={config.epochs})')
    model.load_state_dict(stopping.best_state)
    final = evaluate(model, data)
    result = RunResult(seed=seed, test_acc=final['test_acc'], val_acc=final['val_acc'],
                       val_loss=final['val_loss'], epochs=epoch, best_epoch=stopping.best_epoch,
                       seconds=seconds + time.perf_counter() - start, history=history)
    snapshot(epoch, result)
    return result


def versions() -> Dict[str, str]:
    import torch_geometric
    return {'gat_pyg': gat_pyg.__version__, 'torch': torch.__version__,
            'torch_geometric': torch_geometric.__version__}


def summarize(config: TrainConfig, runs: List[RunResult],
              split: Optional[Dict[str, Any]] = None) -> dict:
    """The results document written by ``--out`` (``split``: the random split, if any)."""
    accs = torch.tensor([run.test_acc for run in runs], dtype=torch.float64)
    summary = {
        'config': asdict(config),
        'runs': [{k: v for k, v in asdict(run).items() if k != 'history'} for run in runs],
        'test_acc_mean': float(accs.mean()),
        'test_acc_std': float(accs.std(unbiased=False)) if len(runs) > 1 else 0.0,
        'versions': versions(),
    }
    if split is not None:
        summary['split'] = split
    return summary
