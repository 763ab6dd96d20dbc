"""Full-batch node classification with early stopping: the engine of ``gat-pyg train``."""
import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

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


def build_model(config: TrainConfig, num_features: int, num_classes: int) -> torch.nn.Module:
    from torch_geometric.nn import GATConv as PyGGATConv

    from gat_pyg.nn.models import GAT
    if config.layer not in ('ours', 'pyg'):
        raise ValueError(f"Unknown layer '{config.layer}' (choose 'ours' or 'pyg')")
    conv = gat_pyg.nn.GATConv if config.layer == 'ours' else PyGGATConv
    return GAT(num_features, config.hidden, num_classes, config.dropout,
               config.negative_slope, config.heads, out_heads=config.out_heads, conv=conv)


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


def train_run(config: TrainConfig, data: Data, num_classes: int, seed: int,
              progress: bool = True) -> RunResult:
    """Trains one model from ``seed``; stops when neither validation loss nor accuracy has
    improved for ``patience`` epochs and restores the epoch with the best validation
    accuracy (ties: lower validation loss), as in the GAT paper."""
    torch.manual_seed(seed)
    model = build_model(config, data.num_features, num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    best_acc, best_loss, best_key = -math.inf, math.inf, (-math.inf, -math.inf)
    best_state, best_epoch, bad_epochs = None, 0, 0
    history: Dict[str, List[float]] = {'train_loss': [], 'val_loss': [], 'val_acc': []}
    start = time.perf_counter()
    bar = tqdm(range(1, config.epochs + 1), desc=f'{config.dataset} seed {seed}',
               disable=not progress, leave=False)
    epoch = 0
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

        key = (metrics['val_acc'], -metrics['val_loss'])
        if key > best_key:
            best_key, best_epoch = key, epoch
            best_state = copy.deepcopy(model.state_dict())
        if metrics['val_acc'] > best_acc or metrics['val_loss'] < best_loss:
            best_acc = max(best_acc, metrics['val_acc'])
            best_loss = min(best_loss, metrics['val_loss'])
            bad_epochs = 0
        else:
            bad_epochs += 1
            if bad_epochs >= config.patience:
                break
    bar.close()
    assert best_state is not None, 'no epoch ran'
    model.load_state_dict(best_state)
    final = evaluate(model, data)
    return RunResult(seed=seed, test_acc=final['test_acc'], val_acc=final['val_acc'],
                     val_loss=final['val_loss'], epochs=epoch, best_epoch=best_epoch,
                     seconds=time.perf_counter() - start, history=history)


def versions() -> Dict[str, str]:
    import torch_geometric
    return {'gat_pyg': gat_pyg.__version__, 'torch': torch.__version__,
            'torch_geometric': torch_geometric.__version__}


def summarize(config: TrainConfig, runs: List[RunResult]) -> dict:
    """The results document written by ``--out``."""
    accs = torch.tensor([run.test_acc for run in runs], dtype=torch.float64)
    return {
        'config': asdict(config),
        'runs': [{k: v for k, v in asdict(run).items() if k != 'history'} for run in runs],
        'test_acc_mean': float(accs.mean()),
        'test_acc_std': float(accs.std(unbiased=False)) if len(runs) > 1 else 0.0,
        'versions': versions(),
    }
