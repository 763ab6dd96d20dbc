r"""A graph classifier: stacked :class:`~gat_pyg.nn.GATConv` layers, a global readout and an
MLP, for the TU benchmarks (``gat-pyg train --task graph``)."""
from typing import List, Optional, Tuple, Type, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import MLP, MessagePassing, global_mean_pool
from torch_geometric.typing import Adj, OptTensor

from gat_pyg.nn.conv import GATConv
from gat_pyg.nn.pool import GlobalAttentionPool

__all__ = ['GraphGAT']

READOUTS = ('attention', 'mean')


class GraphGAT(torch.nn.Module):
    r"""Graph classification with graph attention layers and a global readout.

    :math:`L` layers of :math:`K` concatenated attention heads of size :math:`F'`, each with
    a linear skip connection (and edge features :math:`\mathbf{e}_{ji}` if :obj:`edge_dim`
    is set), compute

    .. math::
        \mathbf{h}_i^{(\ell)} = \mathrm{ELU}\Big(\mathrm{BN}\big(\mathrm{GATConv}_\ell
        (\mathbf{h}^{(\ell-1)}, \mathcal{E}, \mathbf{e})_i\big)\Big), \qquad
        \mathbf{h}_i^{(0)} = \mathbf{x}_i.

    The readout pools the input features and the outputs of all layers (jumping
    knowledge, Xu et al., 2018),
    :math:`\mathbf{z}_i = \mathbf{x}_i \,\Vert\, \mathbf{h}_i^{(1)} \,\Vert\, \cdots
    \,\Vert\, \mathbf{h}_i^{(L)}`, over each graph :math:`g`:

    .. math::
        \mathbf{r}_g = \sum_{i \in \mathcal{V}_g} \beta_i \mathbf{z}_i, \qquad
        \beta_i = \mathrm{softmax}_{i \in \mathcal{V}_g}\big(\mathbf{w}^{\top}
        \mathbf{z}_i + b\big)

    with :class:`~gat_pyg.nn.GlobalAttentionPool` (:obj:`readout='attention'`; with
    :obj:`readout_heads` :math:`> 1`, one gate :math:`(\mathbf{w}_k, b_k)` per head and the
    head readouts averaged), or :math:`\beta_i = 1 / |\mathcal{V}_g|`
    (:obj:`readout='mean'`, :func:`~torch_geometric.nn.global_mean_pool`). Both readouts
    pool the same :math:`\mathbf{z}_i` and the models are otherwise the same, down to their
    initial weights: the gate starts at zero, so the attention readout starts as the mean
    readout and learns where to deviate from it. Since neither readout can see how large a
    graph is (a sum readout could), the classifier, a two-layer MLP with ReLU and dropout,
    also gets :math:`\log |\mathcal{V}_g|` (unless :obj:`graph_size=False`):

    .. math::
        \mathbf{y}_g = \mathrm{MLP}\big(\mathbf{r}_g \,\Vert\, \log |\mathcal{V}_g|\big).

    Args:
        in_channels (int): Number of node features :math:`F`.
        hidden_channels (int): Size :math:`F'` of each attention head.
        out_channels (int): Number of classes :math:`C`.
        num_layers (int, optional): Number of attention layers :math:`L`. (default: :obj:`3`)
        heads (int, optional): Number of heads :math:`K` per layer. (default: :obj:`4`)
        readout (str, optional): :obj:`'attention'` or :obj:`'mean'`.
            (default: :obj:`'attention'`)
        readout_heads (int, optional): Number of gates of the attention readout.
            (default: :obj:`1`)
        edge_dim (int, optional): Number of edge features, passed to every layer.
            (default: :obj:`None`)
        dropout (float, optional): Dropout in the classifier. (default: :obj:`0.5`)
        residual (bool, optional): Give each attention layer its linear skip connection
            (``GATConv(..., residual=True)``). (default: :obj:`True`)
        graph_size (bool, optional): Append :math:`\log |\mathcal{V}_g|` to the readout.
            (default: :obj:`True`)
        conv (type, optional): The attention layer class; pass
            :class:`torch_geometric.nn.GATConv` to run the same model on PyG's layer.
            (default: :class:`gat_pyg.nn.GATConv`)

    Shapes:
        - **input:** node features :math:`(N, F)`, edge indices :math:`(2, E)`, sorted
          graph index :math:`(N)`, edge features :math:`(E, D)` (if :obj:`edge_dim`)
        - **output:** class logits :math:`(B, C)`; with
          :obj:`return_attention_weights=True`, also :math:`\beta` :math:`(N, K_r)`
    """
    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int,
                 num_layers: int = 3, heads: int = 4, readout: str = 'attention',
                 readout_heads: int = 1, edge_dim: Optional[int] = None,
                 dropout: float = 0.5, residual: bool = True, graph_size: bool = True,
                 conv: Type[MessagePassing] = GATConv) -> None:
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"Unknown readout '{readout}' (choose from "
                             f"{', '.join(READOUTS)})")
        if num_layers < 1:
            raise ValueError(f"'num_layers' must be at least 1 (got {num_layers})")
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.out_channels = out_channels
        self.num_layers = num_layers
        self.heads = heads
        self.readout = readout
        self.readout_heads = readout_heads
        self.edge_dim = edge_dim
        self.dropout = dropout
        self.graph_size = graph_size

        width = heads * hidden_channels
        self.convs = torch.nn.ModuleList(
            conv(in_channels if layer == 0 else width, hidden_channels, heads=heads,
                 edge_dim=edge_dim, residual=residual) for layer in range(num_layers))
        self.norms = torch.nn.ModuleList(
            torch.nn.BatchNorm1d(width) for _ in range(num_layers))
        readout_channels = in_channels + num_layers * width
        self.classifier = MLP([readout_channels + int(graph_size), width, out_channels],
                              dropout=dropout, norm=None)
        # Built last, so that both readouts draw the same initial weights for the rest.
        self.pool: Optional[GlobalAttentionPool] = None
        if readout == 'attention':
            self.pool = GlobalAttentionPool(
                torch.nn.Linear(readout_channels, readout_heads), heads=readout_heads,
                concat=False)
            self._zero_gate()

    def reset_parameters(self) -> None:
        """Re-initialises every layer (the readout's gate to zero)."""
        for conv, norm in zip(self.convs, self.norms):
            conv.reset_parameters()
            norm.reset_parameters()
        self.classifier.reset_parameters()
        if self.pool is not None:
            self.pool.reset_parameters()
            self._zero_gate()

    @torch.no_grad()
    def _zero_gate(self) -> None:
        assert self.pool is not None
        self.pool.gate_nn.weight.zero_()
        self.pool.gate_nn.bias.zero_()

    def node_representations(self, x: Tensor, edge_index: Adj,
                             edge_attr: OptTensor = None) -> Tensor:
        r"""The node representations :math:`\mathbf{z}` that the readout pools,
        :math:`(N, F + L K F')`."""
        outputs: List[Tensor] = [x]
        for conv, norm in zip(self.convs, self.norms):
            x = conv(x, edge_index, edge_attr) if self.edge_dim else conv(x, edge_index)
            x = F.elu(norm(x))
            outputs.append(x)
        return torch.cat(outputs, dim=-1)

    def forward(self, x: Tensor, edge_index: Adj, batch: OptTensor = None,
                edge_attr: OptTensor = None, num_graphs: Optional[int] = None,
                return_attention_weights: bool = False
                ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        r"""Classifies the graphs of a batch.

        Args:
            x (torch.Tensor): Node features :math:`(N, F)`.
            edge_index (torch.Tensor or SparseTensor): Connectivity of all graphs, the edge
                :math:`j \to i` as the column ``(j, i)``.
            batch (torch.Tensor, optional): The graph of each node :math:`(N)`, sorted (as
                PyG's :class:`~torch_geometric.loader.DataLoader` makes it); all nodes in
                one graph if :obj:`None`.
            edge_attr (torch.Tensor, optional): Edge features :math:`(E, D)`, used if the
                model was built with :obj:`edge_dim`.
            num_graphs (int, optional): Number of graphs :math:`B` (default:
                ``batch.max() + 1``).
            return_attention_weights (bool, optional): Also return the attention readout's
                :math:`\beta` :math:`(N, K_r)`, which sums to one over each graph's nodes
                per gate (only for :obj:`readout='attention'`). (default: :obj:`False`)

        Returns:
            torch.Tensor: Class logits :math:`(B, C)` (and :math:`\beta`, if asked for).
        """
        if batch is None:
            batch = x.new_zeros(x.size(0), dtype=torch.long)
        z = self.node_representations(x, edge_index, edge_attr)
        beta: Optional[Tensor] = None
        if self.pool is not None:
            if return_attention_weights:
                pooled, beta = self.pool(z, batch, dim_size=num_graphs,
                                         return_attention_weights=True)
            else:
                pooled = self.pool(z, batch, dim_size=num_graphs)
        elif return_attention_weights:
            raise ValueError("The mean readout has no attention weights (build the model "
                             "with readout='attention')")
        else:
            pooled = global_mean_pool(z, batch, num_graphs)
        if self.graph_size:
            size = torch.bincount(batch, minlength=pooled.size(0))[:pooled.size(0)]
            pooled = torch.cat([pooled, size.to(pooled.dtype).clamp(min=1).log().view(-1, 1)],
                               dim=-1)
        logits = self.classifier(pooled)
        return (logits, beta) if beta is not None else logits

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, {self.hidden_channels}, '
                f'{self.out_channels}, num_layers={self.num_layers}, heads={self.heads}, '
                f'readout={self.readout!r}, conv={type(self.convs[0]).__name__})')
