from typing import Optional, Tuple, Union

import torch
from torch import Tensor
from torch.nn import Parameter
from torch.nn.parameter import UninitializedParameter
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.nn.inits import glorot, zeros
from torch_geometric.typing import Adj, OptTensor, PairTensor

from gat_pyg import ops
from gat_pyg.nn.conv.attention import (check_node_features, dropout_seed, finish_heads,
                                       linear_pair, projects_itself, runs_propagate)
from gat_pyg.nn.conv.edges import EdgeOptions, attention_result, prepare_edges
from gat_pyg.ops.reference import softmax_dropout, vector_scores


class GATv2Conv(MessagePassing):
    r"""The GATv2 operator from the `"How Attentive are Graph Attention Networks?"
    <https://arxiv.org/abs/2105.14491>`_ paper, a drop-in replacement for
    :class:`torch_geometric.nn.GATv2Conv` (same constructor, parameters, forward and
    returns), which fixes the static attention problem of the standard GAT: the ranking of
    attended nodes may depend on the query node.

    .. math::
        \mathbf{x}^{\prime}_i = \sum_{j \in \mathcal{N}(i) \cup \{ i \}}
        \alpha_{i,j}\mathbf{\Theta}_{s}\mathbf{x}_{j},

    with attention coefficients

    .. math::
        \alpha_{i,j} = \mathrm{softmax}_{j \in \mathcal{N}(i) \cup \{ i \}} \left(
        \mathbf{a}^{\top}\mathrm{LeakyReLU}\left(
        \mathbf{\Theta}_{s} \mathbf{x}_j + \mathbf{\Theta}_{t} \mathbf{x}_{i}
        + \mathbf{\Theta}_{e} \mathbf{e}_{i,j}
        \right)\right),

    where the edge term is present only with edge features, and
    :math:`\mathbf{\Theta}_{s} = \mathbf{\Theta}_{t}` with :obj:`share_weights=True`.

    The scores, the softmax and the weighted sum run in one segment-attention operator
    with vector scores (:func:`gat_pyg.ops.segment_attention_v2`) over the graph sorted by
    target, cached per :obj:`edge_index` tensor; on a kernel, the edge term
    :math:`\mathbf{\Theta}_{e} \mathbf{e}_{i,j}` is formed inside the operator from
    :obj:`edge_attr` and :obj:`lin_edge`'s weight, so no :math:`[E, H, C]` tensor is made.
    Attention dropout draws its mask from a hash of (seed, edge, head), as in
    :class:`~gat_pyg.nn.GATConv`; explain mode and message-passing hooks run PyG's
    :meth:`propagate`. A :obj:`lin_edge` replaced by a module with a forward of its own is
    called, and its output enters the operator as the edge term.

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
        bias (bool, optional): If set to :obj:`False`, the layer (its projections
            included) will not learn an additive bias. (default: :obj:`True`)
        share_weights (bool, optional): If set to :obj:`True`, the same matrix
            will be applied to the source and the target node of every edge.
            (default: :obj:`False`)
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
        share_weights: bool = False,
        residual: bool = False,
        **kwargs,
    ):
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
        self.share_weights = share_weights

        in_src, in_dst = ((in_channels, in_channels) if isinstance(in_channels, int)
                          else in_channels)
        self.lin_l = Linear(in_src, heads * out_channels, bias=bias,
                            weight_initializer='glorot')
        if share_weights:
            self.lin_r = self.lin_l
        else:
            self.lin_r = Linear(in_dst, heads * out_channels, bias=bias,
                                weight_initializer='glorot')

        self.att = Parameter(torch.empty(1, heads, out_channels))

        if edge_dim is not None:
            self.lin_edge = Linear(edge_dim, heads * out_channels, bias=False,
                                   weight_initializer='glorot')
        else:
            self.lin_edge = None

        total_out_channels = out_channels * (heads if concat else 1)

        if residual:
            self.res = Linear(in_dst, total_out_channels, bias=False,
                              weight_initializer='glorot')
        else:
            self.register_parameter('res', None)

        if bias:
            self.bias = Parameter(torch.empty(total_out_channels))
        else:
            self.register_parameter('bias', None)

        self.reset_parameters()

    def reset_parameters(self):
        super().reset_parameters()
        self.lin_l.reset_parameters()
        self.lin_r.reset_parameters()
        if self.lin_edge is not None:
            self.lin_edge.reset_parameters()
        if self.res is not None:
            self.res.reset_parameters()
        glorot(self.att)
        zeros(self.bias)

    def forward(
        self,
        x: Union[Tensor, PairTensor],
        edge_index: Adj,
        edge_attr: OptTensor = None,
        return_attention_weights: Optional[bool] = None,
    ):
        r"""Runs the forward pass of the module.

        Args:
            x (torch.Tensor or (torch.Tensor, torch.Tensor)): The input node features, or
                source and target features.
            edge_index (torch.Tensor or SparseTensor): The edge indices, or a sparse
                adjacency whose rows are targets.
            edge_attr (torch.Tensor, optional): The edge features.
                (default: :obj:`None`)
            return_attention_weights (bool, optional): If :obj:`True`, also returns
                :obj:`(edge_index, attention_weights)` (or the sparse adjacency holding
                the attention weights). (default: :obj:`None`)
        """
        H, C = self.heads, self.out_channels
        x_src, x_dst = (x, x) if isinstance(x, Tensor) else x
        check_node_features(type(self).__name__, self.in_channels, x_src, x_dst)
        # PyG's layer asserts both.
        if x_dst is None:
            raise AssertionError("GATv2Conv needs the target features: got (x_src, None)")
        if edge_attr is not None and self.lin_edge is None:
            raise AssertionError("'edge_attr' was passed to a GATv2Conv built without "
                                 "'edge_dim'; pass 'edge_dim' to the constructor")

        # Project: the sources' values and the targets' terms.
        x_l, x_r = self._project(x, x_src, x_dst)
        res = self.res(x_dst) if self.res is not None else None

        # Prepare the edges: checks, self-loops, the sorted graph (cached per edge_index).
        propagate = runs_propagate(self)
        edges = prepare_edges(
            edge_index, edge_attr, EdgeOptions(type(self).__name__, self.flow,
                                               self.add_self_loops, self.fill_value,
                                               self.edge_dim),
            x_l.size(0), x_r.size(0), None,
            None if propagate else ops.graph_layout(x_l.device))

        # Attend: the segment-attention operator (which forms the edge term itself), or
        # PyG's propagate for explainers and hooks.
        seed = dropout_seed(self.training, self.dropout)
        p = self.dropout if self.training else 0.0
        if propagate:
            index = edges.propagate_index()
            alpha = self.edge_updater(index, x=(x_l, x_r), edge_attr=edges.edge_attr,
                                      seed=seed)
            out = self.propagate(index, x=(x_l, x_r), alpha=alpha)
        else:
            edge_features, w_edge = self._edge_inputs(edges.edge_attr)
            out, alpha = ops.segment_attention_v2(
                edges.graph, x_l, x_r, self.att.view(H, C), edge_features, w_edge,
                self.negative_slope, p, seed, return_alpha=bool(return_attention_weights))

        # Finish: heads concatenated or averaged, residual, bias.
        out = finish_heads(out, self.concat, res, self.bias)

        # Attach the attention weights, in the form of the input's adjacency.
        if return_attention_weights:
            return out, attention_result(edges.adjacency, alpha)
        return out

    def edge_update(self, x_j: Tensor, x_i: Tensor, edge_attr: OptTensor, seed: OptTensor,
                    index: Tensor, ptr: OptTensor, dim_size: Optional[int]) -> Tensor:
        edge_term = None
        if edge_attr is not None and self.lin_edge is not None:
            edge_term = self._edge_term(edge_attr)
        score = vector_scores(x_j, x_i, self.att, edge_term, self.negative_slope)
        edge_id = torch.arange(index.numel(), device=index.device)
        return softmax_dropout(score, index, ptr, dim_size,
                               self.dropout if self.training else 0.0, seed, edge_id)

    def message(self, x_j: Tensor, alpha: Tensor) -> Tensor:
        return x_j * alpha.unsqueeze(-1)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, '
                f'{self.out_channels}, heads={self.heads})')

    # Stages ##################################################################

    def _project(self, x: Union[Tensor, PairTensor], x_src: Tensor,
                 x_dst: Tensor) -> Tuple[Tensor, Tensor]:
        """``x_l [N_src, H, C]`` and ``x_r [N_dst, H, C]``; one input through two plain
        :class:`Linear` s goes through :func:`linear_pair`."""
        H, C = self.heads, self.out_channels
        if isinstance(x, Tensor) and self.share_weights:
            x_l = self.lin_l(x).view(-1, H, C)
            return x_l, x_l
        lins = (self.lin_l, self.lin_r)
        # (Modules of their own, lazy ones and hooked ones are called instead.)
        if isinstance(x, Tensor) and not any(
                projects_itself(lin) or isinstance(lin.weight, UninitializedParameter)
                or lin._forward_hooks or lin._forward_pre_hooks for lin in lins):
            x_l, x_r = linear_pair(x, self.lin_l, self.lin_r)
            return x_l.view(-1, H, C), x_r.view(-1, H, C)
        return self.lin_l(x_src).view(-1, H, C), self.lin_r(x_dst).view(-1, H, C)

    def _edge_term(self, edge_attr: Tensor) -> Tensor:
        """``lin_edge(edge_attr)`` as ``[E, H, C]`` (PyG's edge term)."""
        return self.lin_edge(edge_attr).view(-1, self.heads, self.out_channels)

    def _edge_inputs(self, edge_attr: OptTensor) -> Tuple[OptTensor, OptTensor]:
        """What the operator takes for the edge term: the features ``[E, D]`` and
        ``lin_edge``'s weight ``[H * C, D]``, or, for a ``lin_edge`` with a forward of its
        own, its output ``[E, H * C]`` and ``None``."""
        if edge_attr is None or self.lin_edge is None:
            return None, None
        if projects_itself(self.lin_edge):
            return self.lin_edge(edge_attr), None
        return edge_attr, self.lin_edge.weight
