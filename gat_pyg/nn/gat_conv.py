import typing
import warnings
from typing import Optional, Tuple, Union

import torch
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
    torch_sparse,
)
from torch_geometric.utils import (
    add_self_loops,
    is_torch_sparse_tensor,
    remove_self_loops,
    to_edge_index,
)
from torch_geometric.utils.sparse import set_sparse_value

from gat_pyg import ops
from gat_pyg.ops.graph import SegmentGraph, build_segment_graph, graph_cache
from gat_pyg.ops.reference import attention_weights

if typing.TYPE_CHECKING:
    from typing import overload
else:
    from torch.jit import _overload_method as overload


def _projects_itself(lin: Linear) -> bool:
    """Whether ``lin`` has a forward of its own rather than :class:`Linear`'s, so that its
    weight cannot stand for it in the folded score product."""
    return type(lin).forward is not Linear.forward


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
    :func:`torch.nn.functional.dropout`, so the fused kernel need not store it; in training
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
        H, C = self.heads, self.out_channels

        x_src, x_dst = (x, x) if isinstance(x, Tensor) else x
        is_pair = not isinstance(x, Tensor)
        self._check_node_features(x_src, x_dst)
        res: Optional[Tensor] = None
        if self.res is not None and x_dst is not None:
            res = self.res(x_dst)

        lin_src = self.lin if self.lin is not None else self.lin_src
        lin_dst = self.lin if self.lin is not None else self.lin_dst
        assert lin_src is not None and lin_dst is not None
        for lin, feat in ((lin_src, x_src), (lin_dst, x_dst)):
            if feat is not None and isinstance(lin.weight, UninitializedParameter):
                lin.initialize_parameters(lin, (feat, ))  # lazy shapes, as in PyG's forward

        a_dst: Optional[Tensor]
        if _projects_itself(lin_src) or _projects_itself(lin_dst):
            # A projection module with its own forward (e.g. HeadwiseDropoutLinear) is
            # called, as PyG's layer calls it, and the scores come from its output.
            h_src = lin_src(x_src).view(-1, H, C)
            a_src = (h_src * self.att_src).sum(dim=-1)
            h_dst = h_src if not is_pair or x_dst is None else lin_dst(x_dst).view(-1, H, C)
            a_dst = None if x_dst is None else (h_dst * self.att_dst).sum(dim=-1)
        else:
            # One product gives the projection and the per-node score terms
            # `(W x * att).sum(-1)`, the latter through weights folded to [H, F]: no
            # [N, H, C] temporaries, one pass over x (and one gradient product back).
            # Targets need only their score term, never their projection.
            same_x = x_dst is x_src and lin_dst is lin_src
            blocks = [lin_src.weight, self._folded(lin_src, self.att_src)]
            if same_x:
                blocks.append(self._folded(lin_dst, self.att_dst))
            h_src, a_src, *a_dst_block = torch.nn.functional.linear(
                x_src, torch.cat(blocks)).split([H * C] + [H] * (len(blocks) - 1), dim=-1)
            h_src = h_src.view(-1, H, C)
            if same_x:
                a_dst = a_dst_block[0]
            elif x_dst is None:
                a_dst = None
            else:
                a_dst = x_dst @ self._folded(lin_dst, self.att_dst).t()

        num_src = h_src.size(0)
        num_dst = self._num_targets(edge_index, size, num_src, x_dst)
        edge_index, edge_attr = self._prepare_edges(edge_index, edge_attr, num_src,
                                                    num_dst, size, x_dst)
        a_edge = self._edge_score(edge_attr)

        seed: Optional[Tensor] = None
        if self.training and self.dropout > 0.0:
            seed = torch.randint(0, 2**62, (), dtype=torch.long)

        if self._runs_propagate():
            # torch.gather with an expanded int32 index (as in PyG's scatter backward)
            # gives wrong results, so PyG's utilities get int64 indices.
            prop_index = edge_index
            if (isinstance(prop_index, Tensor) and not is_torch_sparse_tensor(prop_index)
                    and prop_index.dtype == torch.int32):
                prop_index = prop_index.long()
            alpha = self.edge_updater(prop_index, alpha=(a_src, a_dst), a_edge=a_edge,
                                      seed=seed, size=size)
            out = self.propagate(prop_index, x=(h_src, x_dst), alpha=alpha, size=size)
        else:
            graph = self._segment_graph(edge_index, num_src, num_dst)
            out, alpha = ops.segment_attention(
                graph, h_src, a_src, a_dst, a_edge, self.negative_slope,
                self.dropout if self.training else 0.0, seed,
                return_alpha=bool(return_attention_weights))

        if self.concat:
            out = out.reshape(-1, H * C)
        else:
            out = out.mean(dim=1)

        if res is not None:
            out = out + res

        if self.bias is not None:
            out = out + self.bias

        if return_attention_weights:
            assert alpha is not None
            if isinstance(edge_index, Tensor):
                if is_torch_sparse_tensor(edge_index):
                    adj = set_sparse_value(edge_index, alpha)
                    return out, (adj, alpha)
                return out, (edge_index, alpha)
            elif isinstance(edge_index, SparseTensor):
                return out, edge_index.set_value(alpha, layout='coo')

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

    # Helpers #################################################################

    def _runs_propagate(self) -> bool:
        """Whether PyG's ``propagate`` must run, so that explainers and hooks see the
        per-edge messages."""
        if self._explain or self.decomposed_layers > 1:
            return True
        return any(len(hooks) > 0 for hooks in (
            self._propagate_forward_pre_hooks, self._propagate_forward_hooks,
            self._message_forward_pre_hooks, self._message_forward_hooks,
            self._aggregate_forward_pre_hooks, self._aggregate_forward_hooks,
            self._edge_update_forward_pre_hooks, self._edge_update_forward_hooks))

    def _check_node_features(self, x_src: Tensor, x_dst: Optional[Tensor]) -> None:
        in_src, in_dst = ((self.in_channels, self.in_channels) if isinstance(
            self.in_channels, int) else self.in_channels)
        for name, feat, expected in (('x_src', x_src, in_src), ('x_dst', x_dst, in_dst)):
            if feat is None:
                continue
            if not isinstance(feat, Tensor) or feat.dim() != 2:
                raise ValueError(f"GATConv expects '{name}' to be a 2-D tensor "
                                 f"[num_nodes, channels] (got shape "
                                 f"{tuple(getattr(feat, 'shape', ()))})")
            if not feat.is_floating_point():
                raise TypeError(f"GATConv expects floating-point '{name}' "
                                f"(got {feat.dtype})")
            if expected != -1 and feat.size(1) != expected:
                raise ValueError(f"GATConv was built for {expected} channels in "
                                 f"'{name}' but got {feat.size(1)}")

    def _num_targets(self, edge_index: Adj, size: Size, num_src: int,
                     x_dst: Optional[Tensor]) -> int:
        # Mirrors PyG's size inference in `MessagePassing._collect`.
        if isinstance(edge_index, SparseTensor) or is_torch_sparse_tensor(edge_index):
            if self.flow == 'target_to_source':  # as in PyG
                raise ValueError("flow='target_to_source' is invalid with a sparse "
                                 "adjacency (rows are targets); pass the transposed "
                                 "adjacency instead, e.g. 'adj_t.t()'")
            num_rows, num_cols = edge_index.size(0), edge_index.size(1)
            if num_cols != num_src:
                raise ValueError(f"The sparse adjacency has {num_cols} columns (sources) "
                                 f"but 'x' has {num_src} source nodes")
            if x_dst is not None and x_dst.size(0) != num_rows:
                raise ValueError(f"The sparse adjacency has {num_rows} rows (targets) "
                                 f"but 'x_dst' has {x_dst.size(0)} nodes")
            return num_rows
        if size is not None:
            if size[0] is not None and size[0] != num_src:
                raise ValueError(f"'size[0]' is {size[0]} but 'x' has {num_src} "
                                 f"source nodes")
            if (size[1] is not None and x_dst is not None
                    and size[1] != x_dst.size(0)):
                raise ValueError(f"'size[1]' is {size[1]} but 'x_dst' has "
                                 f"{x_dst.size(0)} target nodes")
            if size[1] is not None:
                return size[1]
        return x_dst.size(0) if x_dst is not None else num_src

    def _prepare_edges(self, edge_index: Adj, edge_attr: OptTensor, num_src: int,
                       num_dst: int, size: Size,
                       x_dst: Optional[Tensor]) -> Tuple[Adj, OptTensor]:
        """Validates the edges and applies PyG's self-loop policy with PyG's utilities, so
        that edge order, loop features and returned forms are PyG's."""
        if isinstance(edge_index, Tensor) and not is_torch_sparse_tensor(edge_index):
            self._check_edge_index(edge_index, num_src, num_dst)
        elif not isinstance(edge_index, (Tensor, SparseTensor)):
            raise TypeError(f"GATConv expects 'edge_index' as a [2, num_edges] tensor, a "
                            f"torch.sparse adjacency or a SparseTensor (got "
                            f"{type(edge_index).__name__})")
        if edge_attr is not None:
            if self.lin_edge is None:
                warnings.warn(
                    "'edge_attr' was passed to a GATConv built without 'edge_dim', so it "
                    "is ignored; pass 'edge_dim' to the constructor to use edge features",
                    UserWarning, stacklevel=3)
                edge_attr = None
            else:
                self._check_edge_attr(edge_attr, edge_index)

        if self.add_self_loops:
            edge_index, edge_attr = self._with_self_loops(edge_index, edge_attr, num_src,
                                                          size, x_dst)

        # Like PyG, take the values of a sparse adjacency as edge features when no
        # 'edge_attr' is given (only multi-dimensional ones: PyG's generated `collect`
        # treats 1-D values as edge weights, also for a SparseTensor).
        if edge_attr is None and self.lin_edge is not None:
            values: OptTensor = None
            if isinstance(edge_index, SparseTensor):
                values = edge_index.storage.value()
            elif is_torch_sparse_tensor(edge_index):
                values = edge_index.values()
            edge_attr = values if values is not None and values.dim() > 1 else None
        return edge_index, edge_attr

    def _with_self_loops(self, edge_index: Adj, edge_attr: OptTensor, num_src: int,
                         size: Size, x_dst: Optional[Tensor]) -> Tuple[Adj, OptTensor]:
        if isinstance(edge_index, SparseTensor):
            if self.edge_dim is None:
                return torch_sparse.set_diag(edge_index), edge_attr
            raise NotImplementedError(
                "The usage of 'edge_attr' and 'add_self_loops' simultaneously is "
                "currently not yet supported for 'edge_index' in a 'SparseTensor' form")
        # Self-loops only for nodes that are both sources and targets:
        num_nodes = num_src if x_dst is None else min(num_src, x_dst.size(0))
        num_nodes = min(size) if size is not None else num_nodes

        def looped(index: Tensor, attr: OptTensor) -> Tuple[Tensor, OptTensor]:
            if not is_torch_sparse_tensor(index):
                # PyG's 'min'/'max' loop features give NaN gradients with int32 indices.
                index = index.long()
            index, attr = remove_self_loops(index, attr)
            return add_self_loops(index, attr, fill_value=self.fill_value,
                                  num_nodes=num_nodes)

        sparse_values = is_torch_sparse_tensor(edge_index) and edge_index.values().dim() > 1
        if sparse_values:  # loop features are derived from the values: not cacheable
            return looped(edge_index, edge_attr)
        if edge_attr is not None:
            if is_torch_sparse_tensor(edge_index):  # PyG's self-loop utilities assert this
                raise AssertionError(
                    "'edge_attr' cannot be passed together with a torch.sparse 'edge_index' "
                    "when 'add_self_loops=True'; store the edge features as the values of "
                    "the sparse adjacency instead")
            if torch.compiler.is_compiling():
                # One pass, so that index and features share one data-dependent size.
                return looped(edge_index, edge_attr)
        looped_index = graph_cache.get_or_build(edge_index, ('self_loops', num_nodes),
                                                lambda: looped(edge_index, None)[0])
        if edge_attr is not None:
            edge_attr = looped(edge_index, edge_attr)[1]
        return looped_index, edge_attr

    def _check_edge_index(self, edge_index: Tensor, num_src: int, num_dst: int) -> None:
        if edge_index.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"GATConv expects 'edge_index' of dtype int64 or int32 "
                            f"(got {edge_index.dtype})")
        if edge_index.dim() != 2 or edge_index.size(0) != 2:
            raise ValueError(f"GATConv expects 'edge_index' of shape [2, num_edges] "
                             f"(got {tuple(edge_index.shape)})")
        if torch.compiler.is_compiling() or edge_index.numel() == 0:
            return
        src, dst = ((edge_index[0], edge_index[1]) if self.flow == 'source_to_target'
                    else (edge_index[1], edge_index[0]))
        low = int(edge_index.min())
        if low < 0:
            raise IndexError(f"'edge_index' holds a negative node index ({low})")
        for name, index, bound in (('source', src, num_src), ('target', dst, num_dst)):
            high = int(index.max())
            if high >= bound:
                raise IndexError(f"'edge_index' holds {name} index {high}, out of range "
                                 f"for {bound} {name} nodes")

    def _check_edge_attr(self, edge_attr: Tensor, edge_index: Adj) -> None:
        num_edges = (edge_index.nnz() if isinstance(edge_index, SparseTensor) else
                     edge_index._nnz() if is_torch_sparse_tensor(edge_index) else
                     edge_index.size(1))
        width = 1 if edge_attr.dim() == 1 else edge_attr.size(-1)
        if edge_attr.dim() not in (1, 2) or edge_attr.size(0) != num_edges:
            raise ValueError(f"GATConv expects 'edge_attr' of shape [{num_edges}, "
                             f"{self.edge_dim}] (got {tuple(edge_attr.shape)})")
        if width != self.edge_dim:
            raise ValueError(f"GATConv was built with edge_dim={self.edge_dim} but "
                             f"'edge_attr' has {width} features per edge")
        if not edge_attr.is_floating_point():
            raise TypeError(f"GATConv expects floating-point 'edge_attr' "
                            f"(got {edge_attr.dtype})")

    def _folded(self, lin: Linear, att: Tensor) -> Tensor:
        """The ``[H, F]`` matrix ``sum_c att[h, c] W[h * C + c, :]`` of ``lin``'s weight
        ``W``: ``x @ folded.T`` is ``(lin(x).view(-1, H, C) * att).sum(-1)``."""
        H, C = self.heads, self.out_channels
        return (lin.weight.view(H, C, -1) * att.view(H, C, 1)).sum(dim=1)

    def _edge_score(self, edge_attr: OptTensor) -> OptTensor:
        """Per-edge score term ``a_e . (W_e e_ij)`` as ``[E, H]``, through the folded
        ``[H, D]`` matrix ``sum_c a_e[h, c] W_e[h * C + c, :]``."""
        if edge_attr is None or self.lin_edge is None or edge_attr.size(0) == 0:
            return None  # like PyG, no edge term (and no gradient) without edges
        if edge_attr.dim() == 1:
            edge_attr = edge_attr.view(-1, 1)
        if _projects_itself(self.lin_edge):
            h_edge = self.lin_edge(edge_attr).view(-1, self.heads, self.out_channels)
            return (h_edge * self.att_edge).sum(dim=-1)
        return edge_attr @ self._folded(self.lin_edge, self.att_edge).t()

    def _segment_graph(self, edge_index: Adj, num_src: int, num_dst: int) -> SegmentGraph:
        key = ('segment_graph', self.flow, num_src, num_dst)

        def build() -> SegmentGraph:
            return build_segment_graph(*self._source_target(edge_index), num_src, num_dst)

        if not isinstance(edge_index, SparseTensor):
            return graph_cache.get_or_build(edge_index, key, build)
        # The graph of a SparseTensor depends on its row and col, which other SparseTensors
        # may share: cache on col, keyed on row, which the entry holds so that its id
        # stays unique while the entry lives.
        row, col = edge_index.storage.row(), edge_index.storage.col()
        return graph_cache.get_or_build(col, key + (id(row), row._version),
                                        lambda: (row, build()))[1]

    def _source_target(self, edge_index: Adj) -> Tuple[Tensor, Tensor]:
        """Source and target of each edge, in the order the attention is returned."""
        if isinstance(edge_index, SparseTensor):
            row, col, _ = edge_index.coo()
            return col, row
        if is_torch_sparse_tensor(edge_index):
            # Not `to_edge_index` for COO: its in-place `_coalesced_` bumps the version
            # counter that the values (maybe the edge features) share, breaking their backward.
            index = (edge_index._indices() if edge_index.layout == torch.sparse_coo else
                     to_edge_index(edge_index)[0])
            return index[1], index[0]
        if self.flow == 'source_to_target':
            return edge_index[0], edge_index[1]
        return edge_index[1], edge_index[0]
