import typing
from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Parameter
from torch.nn.parameter import UninitializedParameter
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.nn.inits import glorot, zeros
from torch_geometric.typing import (
    Adj,
    NoneType,
    OptPairTensor,
    OptTensor,
    Size,
    SparseTensor,
)

from gat_pyg import ops
from gat_pyg.nn.conv.attention import (check_node_features, dropout_seed, finish_heads,
                                       projects_itself, runs_propagate)
from gat_pyg.nn.conv.edges import EdgeOptions, attention_result, prepare_edges
from gat_pyg.ops.reference import attention_weights

if typing.TYPE_CHECKING:
    from typing import overload
else:
    from torch.jit import _overload_method as overload


def _folded(weight: Tensor, att: Tensor) -> Tensor:
    """The ``[H, F]`` matrix ``sum_c att[h, c] W[h * C + c, :]`` of a ``[H * C, F]`` weight
    ``W``: ``x @ folded.T`` is ``((x @ W.T).view(-1, H, C) * att).sum(-1)``."""
    heads, channels = att.shape[-2:]
    return (weight.view(heads, channels, -1) * att.view(heads, channels, 1)).sum(dim=1)


def _project(lin: torch.nn.Module, x: Tensor,
             atts: List[Tensor]) -> Tuple[Tensor, List[Tensor]]:
    """``lin(x)`` as ``[N, H, C]`` and the score terms ``(lin(x) * att).sum(-1)`` ``[N, H]``
    of each ``att``. For a plain :class:`Linear` they come out of one product with
    ``[W; folded(W, att), ...]``: no ``[N, H, C]`` temporaries, one pass over ``x`` (and one
    gradient product back)."""
    heads, channels = atts[0].shape[-2:]
    if projects_itself(lin):  # called, as PyG's layer calls it
        h = lin(x).view(-1, heads, channels)
        return h, [(h * att).sum(dim=-1) for att in atts]
    blocks = [lin.weight] + [_folded(lin.weight, att) for att in atts]
    h, *scores = F.linear(x, torch.cat(blocks)).split([heads * channels] + [heads] * len(atts),
                                                      dim=-1)
    return h.view(-1, heads, channels), scores


def _scores(lin: torch.nn.Module, x: Tensor, att: Tensor) -> Tensor:
    """The score terms ``(lin(x) * att).sum(-1)`` ``[N, H]`` alone: for a plain
    :class:`Linear`, one product with the folded ``[H, F]`` weight."""
    if projects_itself(lin):
        return (lin(x).view(-1, *att.shape[-2:]) * att).sum(dim=-1)
    return x @ _folded(lin.weight, att).t()


class GATConv(MessagePassing):
    r"""The graph attentional operator from the `"Graph Attention Networks"
    <https://arxiv.org/abs/1710.10903>`_ paper, a drop-in replacement for
    :class:`torch_geometric.nn.GATConv` (same constructor, parameters, forward and returns).

    .. math::
        \mathbf{x}^{\prime}_i = \sum_{j \in \mathcal{N}(i) \cup \{ i \}}
        \alpha_{i,j}\mathbf{\Theta}_s\mathbf{x}_{j},

    with attention coefficients

    .. math::
        \alpha_{i,j} = \mathrm{softmax}_{j \in \mathcal{N}(i) \cup \{ i \}} \left(
        \mathrm{LeakyReLU}\left(
        \mathbf{a}^{\top}_{s} \mathbf{\Theta}_{s}\mathbf{x}_j
        + \mathbf{a}^{\top}_{t} \mathbf{\Theta}_{t}\mathbf{x}_i
        + \mathbf{a}^{\top}_{e} \mathbf{\Theta}_{e} \mathbf{e}_{i,j}
        \right)\right),

    where the edge term is present only with edge features, and
    :math:`\mathbf{\Theta}_{s} = \mathbf{\Theta}_{t}` unless the layer is bipartite.

    Unlike PyG's layer, the scores are formed from per-node and per-edge scalars
    (:math:`\mathbf{a}^{\top}_{e} \mathbf{\Theta}_{e}` is folded into one
    :math:`[H, D]` matrix), and the softmax and weighted sum run in one segment-attention
    operator (:func:`gat_pyg.ops.segment_attention`) over the graph sorted by target, which is
    cached per :obj:`edge_index` tensor. Attention dropout draws its mask from a hash of
    (seed, edge, head) (:func:`gat_pyg.ops.reference.dropout_hash`) rather than from
    :func:`torch.nn.functional.dropout`, so the kernels need not store it; in training
    mode with :obj:`dropout > 0` the dropped entries therefore differ from PyG's (same
    distribution), and everything else is PyG's arithmetic. In explain mode, or when
    message-passing hooks are registered, the layer runs PyG's :meth:`propagate` so that
    explainers see the per-edge messages and :obj:`alpha`. The folding needs a plain
    :class:`~torch_geometric.nn.Linear`: a :obj:`lin` (or :obj:`lin_src`, :obj:`lin_dst`,
    :obj:`lin_edge`) replaced by a module with a forward of its own (such as
    :class:`~gat_pyg.nn.HeadwiseDropoutLinear`) is called instead, as PyG's layer calls it.

    Args:
        in_channels (int or tuple): Size of each input sample, or :obj:`-1` to
            derive the size from the first input(s) to the forward method.
            A tuple corresponds to the sizes of source and target
            dimensionalities in case of a bipartite graph.
        out_channels (int): Size of each output sample.
        heads (int, optional): Number of multi-head-attentions.
            (default: :obj:`1`)
        concat (bool, optional): If set to :obj:`False`, the multi-head
            attentions are averaged instead of concatenated.
            (default: :obj:`True`)
        negative_slope (float, optional): LeakyReLU angle of the negative
            slope. (default: :obj:`0.2`)
        dropout (float, optional): Dropout probability of the normalized
            attention coefficients. (default: :obj:`0`)
        add_self_loops (bool, optional): If set to :obj:`False`, will not add
            self-loops to the input graph. (default: :obj:`True`)
        edge_dim (int, optional): Edge feature dimensionality (in case
            there are any). (default: :obj:`None`)
        fill_value (float or torch.Tensor or str, optional): The way to
            generate edge features of self-loops (in case :obj:`edge_dim != None`):
            a value, or a reduction of the features of the edges pointing to the node
            (:obj:`"add"`, :obj:`"mean"`, :obj:`"min"`, :obj:`"max"`, :obj:`"mul"`).
            (default: :obj:`"mean"`)
        bias (bool, optional): If set to :obj:`False`, the layer will not learn
            an additive bias. (default: :obj:`True`)
        residual (bool, optional): If set to :obj:`True`, the layer will add
            a learnable skip-connection. (default: :obj:`False`)
        **kwargs (optional): Additional arguments of
            :class:`torch_geometric.nn.conv.MessagePassing`.

    Shapes:
        - **input:**
          node features :math:`(|\mathcal{V}|, F_{in})` or
          :math:`((|\mathcal{V_s}|, F_{s}), (|\mathcal{V_t}|, F_{t}))`
          if bipartite,
          edge indices :math:`(2, |\mathcal{E}|)` (``int64`` or ``int32``, or an
          :class:`~torch_geometric.EdgeIndex`, a ``torch.sparse`` adjacency
          :math:`(|\mathcal{V_t}|, |\mathcal{V_s}|)` or a ``SparseTensor``),
          edge features :math:`(|\mathcal{E}|, D)` or :math:`(|\mathcal{E}|)` *(optional)*
        - **output:** node features :math:`(|\mathcal{V}|, H * F_{out})` or
          :math:`(|\mathcal{V}_t|, H * F_{out})` if bipartite (:math:`F_{out}` if
          :obj:`concat=False`).
          If :obj:`return_attention_weights=True`, additionally
          :math:`((2, |\mathcal{E}|), (|\mathcal{E}|, H))` (edges with self-loops and their
          attention), or the sparse adjacency with the attention as its values.
    """
    def __init__(
        self,
        in_channels: Union[int, Tuple[int, int]],
        out_channels: int,
        heads: int = 1,
        concat: bool = True,
        negative_slope: float = 0.2,
        dropout: float = 0.0,
        add_self_loops: bool = True,
        edge_dim: Optional[int] = None,
        fill_value: Union[float, Tensor, str] = 'mean',
        bias: bool = True,
        residual: bool = False,
        **kwargs,
    ):
        kwargs.setdefault('aggr', 'add')
        super().__init__(node_dim=0, **kwargs)

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.heads = heads
        self.concat = concat
        self.negative_slope = negative_slope
        self.dropout = dropout
        self.add_self_loops = add_self_loops
        self.edge_dim = edge_dim
        self.fill_value = fill_value
        self.residual = residual

        # A bipartite layer transforms sources and targets with separate weights:
        self.lin = self.lin_src = self.lin_dst = None
        if isinstance(in_channels, int):
            self.lin = Linear(in_channels, heads * out_channels, bias=False,
                              weight_initializer='glorot')
        else:
            self.lin_src = Linear(in_channels[0], heads * out_channels, False,
                                  weight_initializer='glorot')
            self.lin_dst = Linear(in_channels[1], heads * out_channels, False,
                                  weight_initializer='glorot')

        self.att_src = Parameter(torch.empty(1, heads, out_channels))
        self.att_dst = Parameter(torch.empty(1, heads, out_channels))

        if edge_dim is not None:
            self.lin_edge = Linear(edge_dim, heads * out_channels, bias=False,
                                   weight_initializer='glorot')
            self.att_edge = Parameter(torch.empty(1, heads, out_channels))
        else:
            self.lin_edge = None
            self.register_parameter('att_edge', None)

        total_out_channels = out_channels * (heads if concat else 1)

        if residual:
            self.res = Linear(
                in_channels if isinstance(in_channels, int) else in_channels[1],
                total_out_channels,
                bias=False,
                weight_initializer='glorot',
            )
        else:
            self.register_parameter('res', None)

        if bias:
            self.bias = Parameter(torch.empty(total_out_channels))
        else:
            self.register_parameter('bias', None)

        self.reset_parameters()

    def reset_parameters(self):
        super().reset_parameters()
        for lin in (self.lin, self.lin_src, self.lin_dst, self.lin_edge, self.res):
            if lin is not None:
                lin.reset_parameters()
        glorot(self.att_src)
        glorot(self.att_dst)
        glorot(self.att_edge)
        zeros(self.bias)

    @overload
    def forward(
        self,
        x: Union[Tensor, OptPairTensor],
        edge_index: Adj,
        edge_attr: OptTensor = None,
        size: Size = None,
        return_attention_weights: NoneType = None,
    ) -> Tensor:
        pass

    @overload
    def forward(  # noqa: F811
        self,
        x: Union[Tensor, OptPairTensor],
        edge_index: Tensor,
        edge_attr: OptTensor = None,
        size: Size = None,
        return_attention_weights: bool = None,
    ) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        pass

    @overload
    def forward(  # noqa: F811
        self,
        x: Union[Tensor, OptPairTensor],
        edge_index: SparseTensor,
        edge_attr: OptTensor = None,
        size: Size = None,
        return_attention_weights: bool = None,
    ) -> Tuple[Tensor, SparseTensor]:
        pass

    def forward(  # noqa: F811
        self,
        x: Union[Tensor, OptPairTensor],
        edge_index: Adj,
        edge_attr: OptTensor = None,
        size: Size = None,
        return_attention_weights: Optional[bool] = None,
    ) -> Union[
            Tensor,
            Tuple[Tensor, Tuple[Tensor, Tensor]],
            Tuple[Tensor, SparseTensor],
    ]:
        r"""Runs the forward pass of the module.

        Args:
            x (torch.Tensor or (torch.Tensor, torch.Tensor)): The input node
                features, or source and target features (the target part may be
                :obj:`None`).
            edge_index (torch.Tensor or SparseTensor): The edge indices, or a sparse
                adjacency whose rows are targets.
            edge_attr (torch.Tensor, optional): The edge features.
                (default: :obj:`None`)
            size ((int, int), optional): The shape of the adjacency matrix.
                (default: :obj:`None`)
            return_attention_weights (bool, optional): If :obj:`True`, also returns
                :obj:`(edge_index, attention_weights)` (or the sparse adjacency holding
                the attention weights). (default: :obj:`None`)
        """
        x_src, x_dst = (x, x) if isinstance(x, Tensor) else x
        check_node_features(type(self).__name__, self.in_channels, x_src, x_dst)

        # Project: the sources' values and the node score terms, in one product.
        h_src, a_src, a_dst = self._project(x_src, x_dst)
        res = self.res(x_dst) if self.res is not None and x_dst is not None else None

        # Prepare the edges: checks, self-loops, the sorted graph (cached per edge_index).
        propagate = runs_propagate(self)
        edges = prepare_edges(
            edge_index, edge_attr, EdgeOptions(type(self).__name__, self.flow,
                                               self.add_self_loops, self.fill_value,
                                               self.edge_dim),
            h_src.size(0), None if x_dst is None else x_dst.size(0), size,
            None if propagate else ops.graph_layout(h_src.device))

        # Edge score terms: a_e . (W_e e_ij), through the folded [H, D] weights.
        a_edge = self._edge_score(edges.edge_attr)

        # Attend: the segment-attention operator, or PyG's propagate for explainers and hooks.
        seed = dropout_seed(self.training, self.dropout)
        if propagate:
            index = edges.propagate_index()
            alpha = self.edge_updater(index, alpha=(a_src, a_dst), a_edge=a_edge, seed=seed,
                                      size=size)
            out = self.propagate(index, x=(h_src, x_dst), alpha=alpha, size=size)
        else:
            out, alpha = ops.segment_attention(
                edges.graph, h_src, a_src, a_dst, a_edge, self.negative_slope,
                self.dropout if self.training else 0.0, seed,
                return_alpha=bool(return_attention_weights))

        # Finish: heads concatenated or averaged, residual, bias.
        out = finish_heads(out, self.concat, res, self.bias)

        # Attach the attention weights, in the form of the input's adjacency.
        if return_attention_weights:
            return out, attention_result(edges.adjacency, alpha)
        return out

    def edge_update(self, alpha_j: Tensor, alpha_i: OptTensor, a_edge: OptTensor,
                    seed: OptTensor, index: Tensor, ptr: OptTensor,
                    dim_size: Optional[int]) -> Tensor:
        score = alpha_j if alpha_i is None else alpha_j + alpha_i
        if a_edge is not None:
            score = score + a_edge
        edge_id = torch.arange(index.numel(), device=index.device)
        return attention_weights(score, index, ptr, dim_size, self.negative_slope,
                                 self.dropout if self.training else 0.0, seed, edge_id)

    def message(self, x_j: Tensor, alpha: Tensor) -> Tensor:
        return alpha.unsqueeze(-1) * x_j

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, '
                f'{self.out_channels}, heads={self.heads})')

    # Stages ##################################################################

    def _project(self, x_src: Tensor,
                 x_dst: Optional[Tensor]) -> Tuple[Tensor, Tensor, OptTensor]:
        """``h_src [N_src, H, C]``, ``a_src [N_src, H]`` and ``a_dst [N_dst, H]`` (``None``
        without target features). Targets are never projected: only their score term is
        needed."""
        lin_src = self.lin if self.lin is not None else self.lin_src
        lin_dst = self.lin if self.lin is not None else self.lin_dst
        assert lin_src is not None and lin_dst is not None
        for lin, feat in ((lin_src, x_src), (lin_dst, x_dst)):
            if feat is not None and isinstance(lin.weight, UninitializedParameter):
                lin.initialize_parameters(lin, (feat, ))  # lazy shapes, as in PyG's forward
        # Targets that are the sources, through the same weights: one product for both.
        if x_dst is x_src and lin_dst is lin_src:
            h_src, (a_src, a_dst) = _project(lin_src, x_src, [self.att_src, self.att_dst])
            return h_src, a_src, a_dst
        h_src, (a_src, ) = _project(lin_src, x_src, [self.att_src])
        a_dst = None if x_dst is None else _scores(lin_dst, x_dst, self.att_dst)
        return h_src, a_src, a_dst

    def _edge_score(self, edge_attr: OptTensor) -> OptTensor:
        """Per-edge score terms ``a_e . (W_e e_ij)`` ``[E, H]``."""
        if edge_attr is None or self.lin_edge is None or edge_attr.size(0) == 0:
            return None  # like PyG, no edge term (and no gradient) without edges
        return _scores(self.lin_edge, edge_attr, self.att_edge)
