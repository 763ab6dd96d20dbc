r"""Dense Graph Attention Network (pyGAT style): the small-graph test oracle.

This module is the dense formulation of GAT from the write-up the project grew out of
(`pyGAT <https://github.com/Diego999/pyGAT>`_, after Veličković et al., `"Graph Attention
Networks" <https://arxiv.org/abs/1710.10903>`_). It works on a dense adjacency matrix
:math:`A \in \mathbb{R}^{N \times N}` and so costs :math:`O(N^2)` time and memory per
head: it is a readable oracle for tests on small graphs, and **nothing more**. Use
:class:`gat_pyg.nn.GATConv` and :class:`gat_pyg.nn.models.GAT` for real work; the latter
can load the weights of :class:`GAT` (:meth:`gat_pyg.nn.models.GAT.load_dense`) so that the
two can be compared.

Conventions:

* ``adj[i, j] > 0`` means that node :math:`j` is a neighbour of node :math:`i`, i.e. that
  :math:`i` attends to :math:`j` (the edge :math:`j \to i`, the column ``(j, i)`` of a
  PyG ``edge_index``). Rows are targets, columns are sources.
* Self-loops are **not** added: put ones on the diagonal of ``adj`` yourself (GATConv
  adds them by default).
* A row without any neighbour (not even its self-loop) gets uniform attention over *all*
  nodes, exactly as in pyGAT (every score is masked to the same ``-9e15``).

The scores are formed from two per-node scalars,
:math:`s_i = \mathbf{a}_1^\top \mathbf{W}^\top\mathbf{x}_i` and
:math:`t_j = \mathbf{a}_2^\top \mathbf{W}^\top\mathbf{x}_j`, broadcast to an
:math:`N \times N` matrix, so no :math:`N \times N \times 2F'` tensor is ever built (the
first pyGAT version concatenated all pairs of node features).
"""
from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ['GATLayer', 'GAT']

#: The score given to non-edges before the softmax (pyGAT's value).
MASK_VALUE = -9e15


def _check_inputs(name: str, x: Tensor, adj: Tensor, in_features: int) -> Tensor:
    """Validates ``x`` [N, in_features] and ``adj`` [N, N]; returns ``adj`` as a strided
    tensor."""
    if not isinstance(x, Tensor) or x.dim() != 2:
        raise ValueError(f"{name} expects 'x' to be a 2-D tensor [num_nodes, "
                         f"{in_features}] (got shape {tuple(getattr(x, 'shape', ()))})")
    if x.size(1) != in_features:
        raise ValueError(f"{name} was built for {in_features} input features but 'x' has "
                         f"{x.size(1)} (shape {tuple(x.shape)})")
    if not isinstance(adj, Tensor):
        raise ValueError(f"{name} expects 'adj' to be a tensor [num_nodes, num_nodes] "
                         f"(got {type(adj).__name__})")
    if adj.layout != torch.strided:
        adj = adj.to_dense()
    num_nodes = x.size(0)
    if adj.dim() != 2 or adj.size(0) != num_nodes or adj.size(1) != num_nodes:
        raise ValueError(f"{name} expects 'adj' of shape [{num_nodes}, {num_nodes}] (N x N "
                         f"for the {num_nodes} nodes of 'x'), got {tuple(adj.shape)}")
    return adj


class GATLayer(nn.Module):
    r"""One dense graph attention head (pyGAT's ``GraphAttentionLayer``).

    .. math::
        \mathbf{h}_i = \mathbf{W}^\top \mathbf{x}_i, \qquad
        e_{ij} = \mathrm{LeakyReLU}_{\alpha}\left(
            \mathbf{a}_1^\top \mathbf{h}_i + \mathbf{a}_2^\top \mathbf{h}_j \right),

    .. math::
        \alpha_{ij} = \mathrm{softmax}_j\left(\begin{cases}
            e_{ij} & A_{ij} > 0 \\ -9 \cdot 10^{15} & \text{otherwise}
        \end{cases}\right), \qquad
        \mathbf{x}'_i = \sigma\Big(\sum_j \mathrm{dropout}(\alpha_{ij})\, \mathbf{h}_j\Big),

    with :math:`\mathbf{a} = [\mathbf{a}_1; \mathbf{a}_2]`
    (:math:`\mathbf{a}_1` = ``a[:F']`` weighs the target :math:`i`, :math:`\mathbf{a}_2`
    = ``a[F':]`` the source :math:`j`) and :math:`\sigma` the ELU if :obj:`concat` else
    the identity. The scores are computed as ``Wh @ a[:F'] + (Wh @ a[F':]).T``.

    Args:
        in_features (int): Size :math:`F` of each input sample.
        out_features (int): Size :math:`F'` of each output sample.
        dropout (float): Dropout probability of the normalised attention coefficients
            (active in training mode only).
        alpha (float): Negative slope of the LeakyReLU.
        concat (bool, optional): If :obj:`True` (a hidden head, to be concatenated), apply
            an ELU to the output; if :obj:`False` (an output layer), return it as is.
            (default: :obj:`True`)

    Parameters:
        W: :math:`[F, F']`, Xavier-uniform with gain 1.414.
        a: :math:`[2F', 1]`, Xavier-uniform with gain 1.414.

    Shapes:
        - **input:** node features :math:`(N, F)`, dense adjacency :math:`(N, N)` (any
          numeric or boolean dtype; entries :math:`> 0` are edges; a ``torch.sparse``
          adjacency is densified)
        - **output:** node features :math:`(N, F')`
    """
    def __init__(self, in_features: int, out_features: int, dropout: float, alpha: float,
                 concat: bool = True) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.dropout = dropout
        self.alpha = alpha
        self.concat = concat

        self.W = nn.Parameter(torch.empty(in_features, out_features))
        self.a = nn.Parameter(torch.empty(2 * out_features, 1))
        self.leakyrelu = nn.LeakyReLU(alpha)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialises ``W`` and ``a`` as pyGAT does (Xavier-uniform, gain 1.414)."""
        nn.init.xavier_uniform_(self.W, gain=1.414)
        nn.init.xavier_uniform_(self.a, gain=1.414)

    def scores(self, Wh: Tensor) -> Tensor:
        r"""Raw scores :math:`e_{ij}` ``[N, N]`` (before masking) from the projected
        features ``Wh`` ``[N, F']``, without ever forming an :math:`N \times N \times 2F'`
        tensor."""
        F_out = self.out_features
        Wh_target = Wh @ self.a[:F_out, :]  # [N, 1]: a_1 . Wh_i
        Wh_source = Wh @ self.a[F_out:, :]  # [N, 1]: a_2 . Wh_j
        return self.leakyrelu(Wh_target + Wh_source.t())

    def forward(self, x: Tensor, adj: Tensor) -> Tensor:
        r"""Runs the head.

        Args:
            x (torch.Tensor): Node features :math:`(N, F)`.
            adj (torch.Tensor): Dense adjacency :math:`(N, N)`; ``adj[i, j] > 0`` iff node
                :math:`i` attends to node :math:`j`.

        Returns:
            torch.Tensor: Node features :math:`(N, F')`.

        Raises:
            ValueError: If ``x`` is not :math:`(N, F)` or ``adj`` is not :math:`(N, N)`.
        """
        adj = _check_inputs(self.__class__.__name__, x, adj, self.in_features)
        Wh = x @ self.W
        e = self.scores(Wh)
        attention = torch.where(adj > 0, e, e.new_full((), MASK_VALUE))
        attention = F.softmax(attention, dim=1)
        attention = F.dropout(attention, self.dropout, training=self.training)
        h_prime = attention @ Wh
        return F.elu(h_prime) if self.concat else h_prime

    def __repr__(self) -> str:
        return f'{self.__class__.__name__} ({self.in_features} -> {self.out_features})'


class GAT(nn.Module):
    r"""The dense two-layer GAT of pyGAT (the model of the GAT paper for Cora).

    .. math::
        \mathbf{H} = \big\Vert_{k=1}^{K} \mathrm{GATLayer}_k\big(\mathrm{dropout}(\mathbf{X}),
            \mathbf{A}\big), \qquad
        \mathbf{Y} = \mathrm{log\_softmax}\Big(\mathrm{ELU}\big(
            \mathrm{GATLayer}_{\mathrm{out}}(\mathrm{dropout}(\mathbf{H}), \mathbf{A})
            \big)\Big),

    where the :math:`K` hidden heads apply an ELU each (``concat=True``) and the output
    layer is a single head without one (``concat=False``).

    The heads are registered as ``attention_0`` ... ``attention_{K-1}`` and the output
    layer as ``out_att``, so the ``state_dict`` keys are pyGAT's.

    Args:
        nfeat (int): Number of input features :math:`F`.
        nhid (int): Hidden size per head :math:`F'`.
        nclass (int): Number of classes :math:`C`.
        dropout (float): Dropout probability on the inputs of both layers and on the
            attention coefficients.
        alpha (float): Negative slope of the LeakyReLU.
        nheads (int): Number of hidden heads :math:`K`.

    Shapes:
        - **input:** node features :math:`(N, F)`, dense adjacency :math:`(N, N)`
        - **output:** log-probabilities :math:`(N, C)`
    """
    def __init__(self, nfeat: int, nhid: int, nclass: int, dropout: float, alpha: float,
                 nheads: int) -> None:
        super().__init__()
        self.nfeat = nfeat
        self.nhid = nhid
        self.nclass = nclass
        self.dropout = dropout
        self.alpha = alpha
        self.nheads = nheads
        for k in range(nheads):
            self.add_module(f'attention_{k}',
                            GATLayer(nfeat, nhid, dropout=dropout, alpha=alpha, concat=True))
        self.out_att = GATLayer(nhid * nheads, nclass, dropout=dropout, alpha=alpha,
                                concat=False)

    @property
    def attentions(self) -> List[GATLayer]:
        """The hidden heads, in concatenation order."""
        return [getattr(self, f'attention_{k}') for k in range(self.nheads)]

    def reset_parameters(self) -> None:
        """Re-initialises every layer."""
        for layer in self.attentions + [self.out_att]:
            layer.reset_parameters()

    def forward(self, x: Tensor, adj: Tensor) -> Tensor:
        r"""Runs the model.

        Args:
            x (torch.Tensor): Node features :math:`(N, F)`.
            adj (torch.Tensor): Dense adjacency :math:`(N, N)`; ``adj[i, j] > 0`` iff node
                :math:`i` attends to node :math:`j` (include the self-loops).

        Returns:
            torch.Tensor: Log-probabilities :math:`(N, C)`.

        Raises:
            ValueError: If ``x`` is not :math:`(N, F)` or ``adj`` is not :math:`(N, N)`.
        """
        adj = _check_inputs(self.__class__.__name__, x, adj, self.nfeat)
        x = F.dropout(x, self.dropout, training=self.training)
        x = torch.cat([att(x, adj) for att in self.attentions], dim=1)
        x = F.dropout(x, self.dropout, training=self.training)
        x = F.elu(self.out_att(x, adj))
        return F.log_softmax(x, dim=1)
