"""Training curves as a PNG (``gat-pyg train --plot``); needs the optional matplotlib."""
from pathlib import Path
from typing import Sequence

from gat_pyg.training import RunResult


def require_matplotlib() -> None:
    """Raises :class:`ImportError` with the install command if matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        raise ImportError("--plot needs matplotlib: pip install 'gat-pyg[plot]'") from error


def plot_curves(runs: Sequence[RunResult], path: Path, title: str = '') -> None:
    """Training loss, validation loss and validation accuracy per epoch, one line per run,
    the kept epoch marked."""
    require_matplotlib()
    import matplotlib
    matplotlib.use('Agg')  # files only, no display
    import matplotlib.pyplot as plt

    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for run in runs:
        epochs = range(1, len(run.history['train_loss']) + 1)
        line, = loss_ax.plot(epochs, run.history['train_loss'], alpha=0.6,
                             label=f'train, seed {run.seed}')
        loss_ax.plot(epochs, run.history['val_loss'], color=line.get_color(), linestyle='--',
                     label=f'val, seed {run.seed}')
        acc_ax.plot(epochs, run.history['val_acc'], color=line.get_color(),
                    label=f'seed {run.seed}')
        acc_ax.axvline(run.best_epoch, color=line.get_color(), linestyle=':', alpha=0.6)
    loss_ax.set(xlabel='epoch', ylabel='loss (NLL)', title='loss')
    acc_ax.set(xlabel='epoch', ylabel='accuracy', title='validation accuracy (dotted: kept)')
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
    if len(runs) <= 5:
        loss_ax.legend(fontsize='small')
        acc_ax.legend(fontsize='small')
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
