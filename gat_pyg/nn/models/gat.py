r"""The two-layer GAT of the GAT paper, on sparse graphs, built on :class:`~gat_pyg.nn.GATConv`
(or, with ``v2=True``, :class:`~gat_pyg.nn.GATv2Conv`).

It has the constructor of the dense oracle :class:`gat_pyg.nn.dense.GAT` (pyGAT's model)
and can take its weights (:meth:`GAT.load_dense`, :meth:`GAT.from_dense`), so that on a
small graph the two compute the same function.
"""
import math
import warnings
from typing import Iterable, Optional, Sequence, Type, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Data
from torch_geometric.nn import MessagePassing
from torch_geometric.typing import Adj
from tqdm import tqdm

from gat_pyg.minibatch import full_neighborhood_loader
from gat_pyg.nn import dense
from gat_pyg.nn.dropout import HeadwiseDropoutLinear, input_dropout
from gat_pyg.nn.conv import GATConv, GATv2Conv

__all__ = ['GAT', 'INITS', 'glorot_per_head_', 'load_dense_heads', 'dense_heads']


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


INITS = ('pyg', 'paper')


@torch.no_grad()
def glorot_per_head_(conv: MessagePassing) -> None:
    r"""Initialises a non-bipartite GAT layer (ours or PyG's) as the GAT paper does: Glorot
    uniform per head, on each head's own matrices, and zero bias.

    * Each head's :math:`\mathbf{W}_k \in \mathbb{R}^{C \times F}` gets the bound
      :math:`\sqrt{6 / (F + C)}`; the layers' own initialisation draws the stacked
      :math:`[KC, F]` weight with :math:`\sqrt{6 / (F + KC)}`.
    * Each head's two attention halves (source and target, :math:`C \times 1` each, as
      the paper's reference code builds them) get :math:`\sqrt{6 / (C + 1)}`; the layers
      draw ``att_src``/``att_dst`` :math:`[1, K, C]` with :math:`\sqrt{6 / (K + C)}`
      (8 heads of 8: 0.82 here against 0.61; 8 of 3 at the output: 1.22 against 0.74).

    The same bound serves every head, so each tensor is one draw. A residual projection is
    re-drawn by its own initialiser.
    """
    heads, channels = conv.heads, conv.out_channels
    if getattr(conv, 'res', None) is not None:
        conv.res.reset_parameters()
    bound = math.sqrt(6.0 / (conv.lin.weight.size(1) + channels))
    conv.lin.weight.uniform_(-bound, bound)
    bound = math.sqrt(6.0 / (channels + 1))
    conv.att_src.uniform_(-bound, bound)
    conv.att_dst.uniform_(-bound, bound)
    if conv.bias is not None:
        conv.bias.zero_()


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

    With :obj:`residual=True` each layer adds a learned linear map of its own input,
    :math:`\mathrm{GATConv}(\mathbf{X}, \mathcal{E}) + \mathbf{X}\mathbf{W}_{res}`
    (:class:`~gat_pyg.nn.GATConv`'s :obj:`residual`), so that a node's own features are
    not averaged away with its neighbours' (which helps on heterophilous graphs such as
    Tolokers); such a model has no dense counterpart.

    With :obj:`dropout_per_head=True` each head drops the layer's input with its own mask,
    as the paper's reference implementation does, instead of all heads sharing one dropped
    input: the layers' ``lin`` becomes a :class:`~gat_pyg.nn.HeadwiseDropoutLinear` (same
    parameters, same names), which applies the input dropout itself.

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
            :class:`torch_geometric.nn.GATConv` (or ``GATv2Conv``) to run the same model on
            PyG's layer. (default: :class:`gat_pyg.nn.GATConv`, or
            :class:`gat_pyg.nn.GATv2Conv` with :obj:`v2`)
        residual (bool, optional): Whether each layer adds a linear skip connection.
            (default: :obj:`False`)
        dropout_per_head (bool, optional): Whether each head draws its own input-dropout
            mask (the reference implementation's dropout); not with :obj:`residual`,
            whose skip connection belongs to no head. (default: :obj:`False`)
        init (str, optional): :obj:`'pyg'`, the layers' own initialisation, or
            :obj:`'paper'`, the paper's Glorot per head (:func:`glorot_per_head_`), drawn
            after the layers' own. (default: :obj:`'pyg'`)
        v2 (bool, optional): Whether the layers are GATv2's (dynamic attention: the score
            is :math:`\mathbf{a}^{\top} \mathrm{LeakyReLU}(\mathbf{W}_s \mathbf{x}_j +
            \mathbf{W}_t \mathbf{x}_i)`); not with :obj:`dropout_per_head` or
            :obj:`init='paper'`, which are GAT's. (default: :obj:`False`)

    Shapes:
        - **input:** node features :math:`(N, F)`, edge indices :math:`(2, E)` (source
          row, target row; any form :class:`~gat_pyg.nn.GATConv` accepts)
        - **output:** log-probabilities :math:`(N, C)`
    """
    num_layers = 2

    def __init__(self, nfeat: int, nhid: int, nclass: int, dropout: float, alpha: float,
                 nheads: int, out_heads: int = 1,
                 conv: Optional[Type[MessagePassing]] = None, residual: bool = False,
                 dropout_per_head: bool = False, init: str = 'pyg', v2: bool = False) -> None:
        super().__init__()
        if init not in INITS:
            raise ValueError(f"Unknown init '{init}' (choose from {', '.join(INITS)})")
        if residual and dropout_per_head:
            raise ValueError("dropout_per_head needs residual=False: the skip connection "
                             "belongs to no head, so it has no mask of its own")
        if v2 and (dropout_per_head or init != 'pyg'):
            raise ValueError("dropout_per_head and init='paper' are GAT's: GATv2's layers "
                             "have no single per-head projection to mask or initialise")
        conv = conv or (GATv2Conv if v2 else GATConv)
        self.nfeat = nfeat
        self.nhid = nhid
        self.nclass = nclass
        self.dropout = dropout
        self.alpha = alpha
        self.nheads = nheads
        self.out_heads = out_heads
        self.residual = residual
        self.dropout_per_head = dropout_per_head
        self.init = init
        self.v2 = v2
        self.conv1 = conv(nfeat, nhid, heads=nheads, concat=True, negative_slope=alpha,
                          dropout=dropout, residual=residual)
        self.conv2 = conv(nhid * nheads, nclass, heads=out_heads, concat=False,
                          negative_slope=alpha, dropout=dropout, residual=residual)
        if dropout_per_head:
            for layer in (self.conv1, self.conv2):
                layer.lin = HeadwiseDropoutLinear.from_linear(layer.lin, layer.heads, dropout)
        if init != 'pyg':
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialises both layers (Glorot weights, per head with ``init='paper'``;
        zero biases)."""
        for conv in (self.conv1, self.conv2):
            if self.init == 'paper':
                glorot_per_head_(conv)
            else:
                conv.reset_parameters()

    def layer(self, index: int, x: Tensor, edge_index: Adj,
              num_targets: Optional[int] = None) -> Tensor:
        r"""Layer ``index`` (0 or 1) of the model: dropout on its input (in the attention
        layer's projection with :obj:`dropout_per_head`), the attention layer, ELU, and for
        the last layer the log-softmax.

        Args:
            index (int): The layer, :obj:`0` or :obj:`1`.
            x (torch.Tensor): The layer's input :math:`(N, \cdot)`.
            edge_index (torch.Tensor or SparseTensor): Graph connectivity.
            num_targets (int, optional): If given, the layer runs on the bipartite graph
                from all :math:`N` nodes to the first :math:`N_t` = :obj:`num_targets`
                (every edge must end at one of them) and returns their outputs only.

        Returns:
            torch.Tensor: The layer's output :math:`(N, \cdot)`, or :math:`(N_t, \cdot)`.
        """
        conv = (self.conv1, self.conv2)[index]
        if not self.dropout_per_head:
            drop = input_dropout if index == 0 else F.dropout
            x = drop(x, self.dropout, training=self.training)
        if num_targets is None:
            out = conv(x, edge_index)
        else:
            # With dropout_per_head, targets would be projected twice with other masks.
            if self.training and self.dropout_per_head:
                raise RuntimeError('GAT.layer with num_targets runs in eval mode when '
                                   'dropout_per_head is set')
            out = conv((x, x[:num_targets]), edge_index)
        out = F.elu(out)
        return F.log_softmax(out, dim=1) if index == self.num_layers - 1 else out

    def forward(self, x: Tensor, edge_index: Adj) -> Tensor:
        r"""Runs the model.

        Args:
            x (torch.Tensor): Node features :math:`(N, F)`.
            edge_index (torch.Tensor or SparseTensor): Graph connectivity, the edge
                :math:`j \to i` as the column ``(j, i)``.

        Returns:
            torch.Tensor: Log-probabilities :math:`(N, C)`.
        """
        for index in range(self.num_layers):
            x = self.layer(index, x, edge_index)
        return x

    @torch.no_grad()
    def inference(self, x_all: Tensor, loader: Union[Tensor, Iterable[Data]],
                  batch_size: int = 1024, progress: bool = False) -> Tensor:
        r"""Layer-wise inference over the whole graph, without sampling, as
        :meth:`torch_geometric.nn.models.basic_gnn.BasicGNN.inference`: for each layer in
        turn, the layer is computed for every node, batch by batch of target nodes, from
        the previous layer's output for the batch's complete one-hop neighbourhood. Memory
        is bounded by the largest batch's neighbourhood (plus two :math:`(N, \cdot)`
        tensors), not by the whole graph's, and the result equals the eval-mode
        :meth:`forward` (up to the order of floating-point sums).

        Each batch runs as a bipartite graph, from its neighbourhood's nodes to its
        targets, which are its first ``batch.batch_size`` nodes.

        Args:
            x_all (torch.Tensor): Node features :math:`(N, F)`.
            loader (torch.Tensor or iterable of Data): The graph as ``edge_index``
                :math:`(2, E)`, batched here by
                :func:`~gat_pyg.minibatch.full_neighborhood_loader`; or batches of that
                form (``n_id``, ``batch_size``, ``edge_index`` with every edge ending at
                one of the first ``batch_size`` nodes), e.g. that loader built once and
                reused, or a list of its batches. Every node must be a target once.
            batch_size (int, optional): Target nodes per batch when ``loader`` is an
                ``edge_index``. (default: :obj:`1024`)
            progress (bool, optional): Show a progress bar. (default: :obj:`False`)

        Returns:
            torch.Tensor: Log-probabilities :math:`(N, C)`.

        Raises:
            RuntimeError: In training mode (call :meth:`eval` first).
            ValueError: If the batches do not make every node a target exactly once.
        """
        if self.training:
            raise RuntimeError('GAT.inference runs in eval mode: call model.eval() first')
        num_nodes = x_all.size(0)
        if isinstance(loader, Tensor):
            loader = full_neighborhood_loader(loader, num_nodes, batch_size)
        bar = tqdm(total=self.num_layers * num_nodes, desc='Inference', disable=not progress,
                   leave=False)
        for index in range(self.num_layers):
            out: Optional[Tensor] = None
            covered = torch.zeros(num_nodes, dtype=torch.long, device=x_all.device)
            for batch in loader:
                targets = batch.n_id[:batch.batch_size]
                h = self.layer(index, x_all[batch.n_id], batch.edge_index,
                               num_targets=batch.batch_size)
                if out is None:
                    out = h.new_empty(num_nodes, h.size(1))
                out[targets] = h
                covered[targets] += 1
                bar.update(targets.numel())
            if out is None or not bool((covered == 1).all()):
                raise ValueError(f'GAT.inference: the batches must make each of the '
                                 f'{num_nodes} nodes a target exactly once '
                                 f'({int((covered == 0).sum())} missed, '
                                 f'{int((covered > 1).sum())} repeated)')
            x_all = out
        bar.close()
        return x_all

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
        options = ''.join(f', {name}=True' for name in ('residual', 'dropout_per_head', 'v2')
                          if getattr(self, name))
        options += f", init='{self.init}'" if self.init != 'pyg' else ''
        return (f'{self.__class__.__name__}({self.nfeat}, {self.nhid}, {self.nclass}, '
                f'heads={self.nheads}{options})')
