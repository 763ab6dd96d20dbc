r"""The two-layer GAT of the GAT paper, on sparse graphs, built on :class:`~gat_pyg.nn.GATConv`.

It has the constructor of the dense oracle :class:`gat_pyg.nn.dense.GAT` (pyGAT's model)
and can take its weights (:meth:`GAT.load_dense`, :meth:`GAT.from_dense`), so that on a
small graph the two compute the same function.
"""
import warnings
from typing import Optional, Sequence, Type

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.typing import Adj

from gat_pyg.nn import dense
from gat_pyg.nn.gat_conv import GATConv

__all__ = ['GAT', 'input_dropout', 'load_dense_heads', 'dense_heads']


def input_dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """:func:`torch.nn.functional.dropout` for mostly-zero inputs (bag-of-words features):
    random numbers are drawn only for the nonzero entries, since dropping a zero changes
    nothing. Same distribution and ``1 / (1 - p)`` scaling as ``F.dropout``, at a fraction
    of the cost of torch's CPU random generator (Cora: 7 ms instead of 56 ms); inputs with
    more than a quarter of their entries nonzero go to ``F.dropout``."""
    if not training or p == 0.0:
        return x
    nonzero = x.nonzero(as_tuple=True)
    if p >= 1.0 or nonzero[0].numel() > x.numel() // 4:
        return F.dropout(x, p, training)
    keep = torch.rand(nonzero[0].numel(), dtype=x.dtype, device=x.device) >= p
    return torch.zeros_like(x).index_put_(nonzero, x[nonzero] * keep / (1.0 - p))


def _check_head_shapes(conv: GATConv, layers: Sequence['dense.GATLayer']) -> None:
    if not isinstance(conv.in_channels, int) or conv.lin is None:
        raise ValueError("Dense heads can only be loaded into a non-bipartite GATConv")
    if conv.lin_edge is not None or conv.res is not None:
        raise ValueError("Dense heads can only be loaded into a GATConv without edge "
                         "features or residual connection (the dense layer has neither)")
    if len(layers) != conv.heads:
        raise ValueError(f"GATConv has {conv.heads} heads but {len(layers)} dense layers "
                         f"were given")
    for k, layer in enumerate(layers):
        if (layer.in_features, layer.out_features) != (conv.in_channels, conv.out_channels):
            raise ValueError(f"Dense head {k} is {layer.in_features} -> "
                             f"{layer.out_features} but GATConv is {conv.in_channels} -> "
                             f"{conv.out_channels} per head")


@torch.no_grad()
def load_dense_heads(conv: GATConv, layers: Sequence['dense.GATLayer']) -> None:
    r"""Copies dense heads :class:`gat_pyg.nn.dense.GATLayer` into the heads of ``conv``
    (in order) and zeroes its bias.

    For head :math:`k` with out size :math:`C`:

    * ``W_k`` :math:`[F, C]` becomes rows :math:`kC \ldots (k+1)C - 1` of ``lin.weight``
      (``lin`` computes ``x @ lin.weight.T``, so the rows are ``W_k.T``);
    * ``a_k[:C]``, which weighs the target :math:`i` in the dense score, becomes
      ``att_dst[0, k]``;
    * ``a_k[C:]``, which weighs the source / neighbour :math:`j`, becomes ``att_src[0, k]``.

    The dense ELU of hidden heads (``concat=True``) is not part of GATConv: apply it to
    the output (with a zero bias, ``ELU`` of the concatenation equals the concatenation of
    the ELUs). The dense adjacency ``adj[i, j] > 0`` corresponds to the ``edge_index``
    column ``(j, i)``, plus the self-loops GATConv adds.
    """
    _check_head_shapes(conv, layers)
    C = conv.out_channels
    for k, layer in enumerate(layers):
        conv.lin.weight[k * C:(k + 1) * C].copy_(layer.W.t())
        conv.att_dst[0, k].copy_(layer.a[:C, 0])
        conv.att_src[0, k].copy_(layer.a[C:, 0])
    if conv.bias is not None:
        conv.bias.zero_()


@torch.no_grad()
def dense_heads(conv: GATConv, layers: Sequence['dense.GATLayer']) -> None:
    """The inverse of :func:`load_dense_heads`: copies the heads of ``conv`` into dense
    layers (a non-zero bias of ``conv`` has no dense counterpart and is not copied)."""
    _check_head_shapes(conv, layers)
    C = conv.out_channels
    for k, layer in enumerate(layers):
        layer.W.copy_(conv.lin.weight[k * C:(k + 1) * C].t())
        layer.a[:C, 0].copy_(conv.att_dst[0, k])
        layer.a[C:, 0].copy_(conv.att_src[0, k])


class GAT(nn.Module):
    r"""The two-layer GAT of the GAT paper for transductive node classification.

    .. math::
        \mathbf{H} = \mathrm{ELU}\big(\mathrm{GATConv}_1(\mathrm{dropout}(\mathbf{X}),
            \mathcal{E})\big), \qquad
        \mathbf{Y} = \mathrm{log\_softmax}\Big(\mathrm{ELU}\big(
            \mathrm{GATConv}_2(\mathrm{dropout}(\mathbf{H}), \mathcal{E})\big)\Big),

    with :math:`\mathrm{GATConv}_1` :math:`K` concatenated heads of size :math:`F'` and
    :math:`\mathrm{GATConv}_2` one head of size :math:`C`; both use the LeakyReLU slope
    :obj:`alpha` and attention dropout :obj:`dropout`, and add self-loops. This is the
    structure of the dense :class:`gat_pyg.nn.dense.GAT`, plus a bias per layer
    (initialised to zero, so a fresh or :meth:`load_dense`-ed model computes the dense
    model's function).

    Attention dropout in training mode draws its mask differently from the dense model
    (see :class:`~gat_pyg.nn.GATConv`), so only eval-mode outputs match.

    Args:
        nfeat (int): Number of input features :math:`F`.
        nhid (int): Hidden size per head :math:`F'`.
        nclass (int): Number of classes :math:`C`.
        dropout (float): Dropout probability on the inputs of both layers and on the
            attention coefficients.
        alpha (float): Negative slope of the LeakyReLU.
        nheads (int): Number of hidden heads :math:`K`.
        out_heads (int, optional): Number of output heads, averaged (the paper uses 8 on
            PubMed). (default: :obj:`1`)
        conv (type, optional): The attention layer class; pass
            :class:`torch_geometric.nn.GATConv` to run the same model on PyG's layer.
            (default: :class:`gat_pyg.nn.GATConv`)

    Shapes:
        - **input:** node features :math:`(N, F)`, edge indices :math:`(2, E)` (source
          row, target row; any form :class:`~gat_pyg.nn.GATConv` accepts)
        - **output:** log-probabilities :math:`(N, C)`
    """
    def __init__(self, nfeat: int, nhid: int, nclass: int, dropout: float, alpha: float,
                 nheads: int, out_heads: int = 1,
                 conv: Type[MessagePassing] = GATConv) -> None:
        super().__init__()
        self.nfeat = nfeat
        self.nhid = nhid
        self.nclass = nclass
        self.dropout = dropout
        self.alpha = alpha
        self.nheads = nheads
        self.out_heads = out_heads
        self.conv1 = conv(nfeat, nhid, heads=nheads, concat=True, negative_slope=alpha,
                          dropout=dropout)
        self.conv2 = conv(nhid * nheads, nclass, heads=out_heads, concat=False,
                          negative_slope=alpha, dropout=dropout)

    def reset_parameters(self) -> None:
        """Re-initialises both layers (Glorot weights, zero biases)."""
        self.conv1.reset_parameters()
        self.conv2.reset_parameters()

    def forward(self, x: Tensor, edge_index: Adj) -> Tensor:
        r"""Runs the model.

        Args:
            x (torch.Tensor): Node features :math:`(N, F)`.
            edge_index (torch.Tensor or SparseTensor): Graph connectivity, the edge
                :math:`j \to i` as the column ``(j, i)``.

        Returns:
            torch.Tensor: Log-probabilities :math:`(N, C)`.
        """
        x = input_dropout(x, self.dropout, training=self.training)
        x = F.elu(self.conv1(x, edge_index))
        x = F.dropout(x, self.dropout, training=self.training)
        x = F.elu(self.conv2(x, edge_index))
        return F.log_softmax(x, dim=1)

    def _check_dense(self, model: 'dense.GAT') -> None:
        if not isinstance(model, dense.GAT):
            raise TypeError(f"Expected a gat_pyg.nn.dense.GAT (got {type(model).__name__})")
        if self.out_heads != 1:
            raise ValueError(f"The dense GAT has one output head but this model has "
                             f"{self.out_heads}")
        mine = (self.nfeat, self.nhid, self.nclass, self.nheads)
        theirs = (model.nfeat, model.nhid, model.nclass, model.nheads)
        if mine != theirs:
            raise ValueError(f"Shape mismatch: this model has (nfeat, nhid, nclass, "
                             f"nheads) = {mine} but the dense model {theirs}")

    def load_dense(self, model: 'dense.GAT') -> 'GAT':
        r"""Copies the weights of a dense :class:`gat_pyg.nn.dense.GAT` into this model
        and zeroes the biases (see :func:`load_dense_heads` for the mapping: ``W`` of head
        :math:`k` to rows of ``lin.weight``, ``a[:F']`` (target) to ``att_dst``, ``a[F':]``
        (source) to ``att_src``). Afterwards, in eval mode, ``self(x, edge_index)`` equals
        ``model(x, adj)`` when ``adj[i, j] > 0`` exactly for the edges ``(j, i)`` of
        ``edge_index`` and for ``i == j``.

        Returns:
            GAT: ``self``.

        Raises:
            ValueError: If the sizes differ.
        """
        self._check_dense(model)
        if (model.alpha, model.dropout) != (self.alpha, self.dropout):
            warnings.warn(f"Loading a dense GAT with alpha={model.alpha}, dropout="
                          f"{model.dropout} into a GAT with alpha={self.alpha}, dropout="
                          f"{self.dropout}: only the weights are copied", UserWarning,
                          stacklevel=2)
        load_dense_heads(self.conv1, model.attentions)
        load_dense_heads(self.conv2, [model.out_att])
        return self

    @classmethod
    def from_dense(cls, model: 'dense.GAT') -> 'GAT':
        """A new model with the hyperparameters and weights of a dense
        :class:`gat_pyg.nn.dense.GAT`, on the same device and dtype."""
        new = cls(model.nfeat, model.nhid, model.nclass, model.dropout, model.alpha,
                  model.nheads)
        param: Optional[Tensor] = next(model.parameters(), None)
        if param is not None:
            new = new.to(device=param.device, dtype=param.dtype)
        return new.load_dense(model)

    def to_dense(self) -> 'dense.GAT':
        """A dense :class:`gat_pyg.nn.dense.GAT` with this model's hyperparameters and
        weights (the biases, which the dense model lacks, must be zero for the two to
        agree)."""
        model = dense.GAT(self.nfeat, self.nhid, self.nclass, self.dropout, self.alpha,
                          self.nheads)
        param = self.conv1.lin.weight
        model = model.to(device=param.device, dtype=param.dtype)
        dense_heads(self.conv1, model.attentions)
        dense_heads(self.conv2, [model.out_att])
        return model

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.nfeat}, {self.nhid}, {self.nclass}, '
                f'heads={self.nheads})')
