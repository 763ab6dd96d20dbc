"""Figures as PNGs: training curves (``gat-pyg train --plot``) and graph readout attention
(``gat-pyg train --task graph --attention-figure``); needs the optional matplotlib."""
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from gat_pyg.metrics import METRIC_NAMES
from gat_pyg.training import RunResult

if TYPE_CHECKING:
    from torch import Tensor
    from torch_geometric.data import Data


def require_matplotlib(flag: str = '--plot') -> None:
    """Raises :class:`ImportError` naming ``flag`` and the install command if matplotlib is
    missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        raise ImportError(f"{flag} needs matplotlib: pip install 'gat-pyg[plot]'") from error


def plot_curves(runs: Sequence[RunResult], path: Path, title: str = '') -> None:
    """Training loss, validation loss and validation score (the runs' metric) per epoch, one
    line per run, the kept epoch marked."""
    require_matplotlib()
    import matplotlib
    matplotlib.use('Agg')  # files only, no display
    import matplotlib.pyplot as plt

    fig, (loss_ax, score_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for run in runs:
        epochs = range(1, len(run.history['train_loss']) + 1)
        line, = loss_ax.plot(epochs, run.history['train_loss'], alpha=0.6,
                             label=f'train, seed {run.seed}')
        loss_ax.plot(epochs, run.history['val_loss'], color=line.get_color(), linestyle='--',
                     label=f'val, seed {run.seed}')
        score_ax.plot(epochs, run.history['val_score'], color=line.get_color(),
                      label=f'seed {run.seed}')
        score_ax.axvline(run.best_epoch, color=line.get_color(), linestyle=':', alpha=0.6)
    loss_ax.set(xlabel='epoch', ylabel='loss (NLL)', title='loss')
    metric = METRIC_NAMES[runs[0].metric] if runs else 'score'
    score_ax.set(xlabel='epoch', ylabel=metric, title=f'validation {metric} (dotted: kept)')
    for ax in (loss_ax, score_ax):
        ax.grid(alpha=0.3)
    if len(runs) <= 5:
        loss_ax.legend(fontsize='small')
        score_ax.legend(fontsize='small')
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_readout_attention(graphs: Sequence['Data'], betas: Sequence['Tensor'], path: Path,
                           node_names: Optional[Sequence[str]] = None,
                           titles: Optional[Sequence[str]] = None, title: str = '',
                           columns: int = 3) -> None:
    r"""Draws ``graphs`` (small graphs such as molecules) side by side, each node coloured
    and sized by its weight :math:`\beta_i` in a graph readout (``betas[k]``: one weight
    per node of ``graphs[k]``, summing to one), shown as :math:`\beta_i |\mathcal{V}_g|`
    so that 1 is the uniform weight of a mean readout. With ``node_names``, nodes are
    labelled by the name of their one-hot feature (its first ``len(node_names)``
    columns), e.g. MUTAG's atom types (:data:`gat_pyg.data.MUTAG_ATOMS`)."""
    require_matplotlib('--attention-figure')
    import matplotlib
    matplotlib.use('Agg')  # files only, no display
    import matplotlib.pyplot as plt
    import networkx as nx
    from torch_geometric.utils import to_networkx

    relative = [beta.detach().double() * beta.numel() for beta in betas]
    vmax = max(float(weights.max()) for weights in relative)
    rows = -(-len(graphs) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns + 1.2, 3.6 * rows),
                             squeeze=False, layout='constrained')
    cmap = plt.get_cmap('coolwarm')  # blue: below the uniform weight, red: above
    norm = matplotlib.colors.TwoSlopeNorm(vmin=0.0, vcenter=1.0, vmax=max(vmax, 1.01))
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k >= len(graphs):
            continue
        graph = to_networkx(graphs[k], to_undirected=True)
        layout = nx.kamada_kawai_layout(graph)
        weights = relative[k].tolist()
        labels = None
        if node_names is not None:
            kinds = graphs[k].x[:, :len(node_names)].argmax(dim=-1).tolist()
            labels = {node: node_names[kind] for node, kind in enumerate(kinds)}
        nx.draw_networkx_edges(graph, layout, ax=ax, edge_color='0.6', width=1.5)
        nx.draw_networkx_nodes(graph, layout, ax=ax, node_color=norm(weights), cmap=cmap,
                               vmin=0.0, vmax=1.0,
                               node_size=[120 + 480 * w / vmax for w in weights],
                               edgecolors='0.2', linewidths=0.5)
        if labels is not None:
            nx.draw_networkx_labels(graph, layout, labels, ax=ax, font_size=7)
        if titles is not None:
            ax.set_title(titles[k], fontsize=9)
    colorbar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap),
                            ax=axes.ravel().tolist(), shrink=0.7)
    colorbar.set_label(r'readout weight $\beta_i \cdot |V|$ (1 = uniform, as in a mean)')
    if title:
        fig.suptitle(title)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
