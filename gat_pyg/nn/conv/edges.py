"""Edge handling shared by the attention layers.

:func:`prepare_edges` takes the edges in every form PyG's layers take (a ``[2, E]``
``int64``/``int32`` tensor, an :class:`~torch_geometric.EdgeIndex`, a ``torch.sparse``
COO/CSR adjacency or a ``SparseTensor``, whose rows are targets), checks them, applies PyG's
self-loop policy with PyG's own utilities (so edge order, self-loop features for every
``fill_value`` and the returned forms are PyG's) and sorts the edges into the
:class:`~gat_pyg.ops.SegmentGraph` that the operator's implementation asks for. The index
work is cached per ``edge_index`` tensor (:data:`gat_pyg.ops.graph_cache`): a repeated call
on the same graph checks, loops and sorts nothing again. :func:`attention_result` returns
attention weights in the input's form.
"""
import warnings
from typing import NamedTuple, Optional, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.typing import Adj, OptTensor, Size, SparseTensor, torch_sparse
from torch_geometric.utils import (
    add_self_loops,
    is_torch_sparse_tensor,
    remove_self_loops,
    to_edge_index,
)
from torch_geometric.utils.loop import compute_loop_attr
from torch_geometric.utils.sparse import set_sparse_value

from gat_pyg.ops.graph import (GraphLayout, SegmentGraph, build_segment_graph,
                               check_node_indices, graph_cache)

__all__ = ['EdgeOptions', 'AttentionEdges', 'prepare_edges', 'attention_result']


class EdgeOptions(NamedTuple):
    """A layer's edge settings (its constructor arguments of the same names)."""
    layer: str  # the layer's class name, for messages
    flow: str
    add_self_loops: bool
    fill_value: Union[float, Tensor, str, None]
    edge_dim: Optional[int]


class AttentionEdges(NamedTuple):
    """The edges a layer attends over."""
    adjacency: Adj  # with self-loops where the layer adds them, in the input's form
    edge_attr: OptTensor  # features [E', D] of those edges (self-loops' included), or None
    graph: Optional[SegmentGraph]  # the edges sorted in the layout asked for, or None
    num_dst: int

    def propagate_index(self) -> Adj:
        """The adjacency for PyG's ``propagate``: a dense ``int32`` index as ``int64``, since
        PyG's scatter backward gives wrong results for an expanded ``int32`` index."""
        index = self.adjacency
        if (isinstance(index, Tensor) and not is_torch_sparse_tensor(index)
                and index.dtype == torch.int32):
            return index.long()
        return index


class _Looped(NamedTuple):
    """What the cache keeps per ``edge_index``: the adjacency attended over, and how to
    extend per-call edge features to it (PyG's ``remove_self_loops`` + ``add_self_loops``)."""
    adjacency: Adj
    kept: OptTensor  # ids of the input edges that are not self-loops (None: all are kept)
    loop_col: OptTensor  # [2, E'] index whose row 1 is the kept edges' targets, as PyG's
    loop_nodes: int  # self-loops added (the first loop_nodes nodes)
    graph: Optional[SegmentGraph]


def prepare_edges(edge_index: Adj, edge_attr: OptTensor, options: EdgeOptions,
                  num_src: int, num_x_dst: Optional[int], size: Size,
                  layout: Optional[GraphLayout]) -> AttentionEdges:
    """Checks the edges and their features, adds self-loops where the layer does and, if
    ``layout`` is given, sorts the edges into a graph of that layout.

    Args:
        edge_index: the edges, in any form the layers take.
        edge_attr: edge features ``[E]`` or ``[E, D]``, or ``None``.
        options: the layer's edge settings.
        num_src: the number of source nodes (rows of the source features).
        num_x_dst: the rows of the target features, or ``None`` if there are none.
        size: the ``size`` argument of the layer's forward.
        layout: the graph layout of the implementation that will run, or ``None`` for no
            graph (PyG's ``propagate`` needs none).
    """
    num_dst = _num_targets(edge_index, options, size, num_src, num_x_dst)
    _check_form(edge_index, options.layer)
    if edge_attr is not None:
        if options.edge_dim is None:
            warnings.warn(
                f"'edge_attr' was passed to a {options.layer} built without 'edge_dim', so "
                f"it is ignored; pass 'edge_dim' to the constructor to use edge features",
                UserWarning, stacklevel=4)
            edge_attr = None
        else:
            _check_edge_attr(edge_attr, edge_index, options)
    loop_nodes = _loop_nodes(options, num_src, num_x_dst, size)
    if (options.add_self_loops and isinstance(edge_index, SparseTensor)
            and options.edge_dim is not None):
        raise NotImplementedError(
            "The usage of 'edge_attr' and 'add_self_loops' simultaneously is currently not "
            "yet supported for 'edge_index' in a 'SparseTensor' form")
    if (options.add_self_loops and edge_attr is not None
            and is_torch_sparse_tensor(edge_index)):  # PyG's self-loop utilities assert this
        raise AssertionError(
            "'edge_attr' cannot be passed together with a torch.sparse 'edge_index' when "
            "'add_self_loops=True'; store the edge features as the values of the sparse "
            "adjacency instead")

    def with_graph(looped: _Looped) -> _Looped:
        if layout is None:
            return looped
        src, dst = _source_target(looped.adjacency, options.flow)
        return looped._replace(graph=build_segment_graph(src, dst, num_src, num_dst, layout,
                                                         check=False))

    def build() -> _Looped:
        if isinstance(edge_index, Tensor) and not is_torch_sparse_tensor(edge_index):
            src, dst = _source_target(edge_index, options.flow)
            check_node_indices(src, dst, num_src, num_dst, "'edge_index'")
        return with_graph(_with_self_loops(edge_index, options, loop_nodes))

    # Loop features derived from the values of a sparse adjacency are per call.
    values_are_features = (is_torch_sparse_tensor(edge_index)
                           and edge_index.values().dim() > 1)
    key = ('attention_edges', options.flow, num_src, num_dst, loop_nodes, layout)
    if options.add_self_loops and edge_attr is not None and torch.compiler.is_compiling():
        # One pass, so that the index and the features share one data-dependent size.
        adjacency, edge_attr = add_self_loops(*remove_self_loops(edge_index.long(), edge_attr),
                                              fill_value=options.fill_value,
                                              num_nodes=loop_nodes)
        return AttentionEdges(adjacency, _feature_rows(edge_attr),
                              with_graph(_Looped(adjacency, None, None, 0, None)).graph,
                              num_dst)
    if values_are_features and options.add_self_loops:
        looped = build()
    elif isinstance(edge_index, SparseTensor):
        # Its graph depends on its row and col, which other SparseTensors may share: cache
        # on col, keyed on row, which the entry holds so that its id stays unique.
        row, col = edge_index.storage.row(), edge_index.storage.col()
        looped = graph_cache.get_or_build(col, key + (id(row), row._version),
                                          lambda: (row, build()))[1]
    else:
        looped = graph_cache.get_or_build(edge_index, key, build)

    if edge_attr is not None and options.add_self_loops:
        edge_attr = _looped_features(edge_attr, looped, options.fill_value)
    # Like PyG, take the values of a sparse adjacency as edge features when no 'edge_attr'
    # is given (only multi-dimensional ones: PyG's generated `collect` treats 1-D values as
    # edge weights, also for a SparseTensor).
    if edge_attr is None and options.edge_dim is not None:
        values = _sparse_values(looped.adjacency)
        edge_attr = values if values is not None and values.dim() > 1 else None
    return AttentionEdges(looped.adjacency, _feature_rows(edge_attr), looped.graph, num_dst)


def _feature_rows(edge_attr: OptTensor) -> OptTensor:
    """Edge features as rows ``[E, D]`` (``[E]`` is one feature per edge). Only after the
    self-loops' features are made: a tensor ``fill_value`` is read against the input's
    own shape."""
    if edge_attr is not None and edge_attr.dim() == 1:
        return edge_attr.view(-1, 1)
    return edge_attr


def attention_result(adjacency: Adj, alpha: Tensor):
    """Attention weights ``[E, H]`` (in the order of ``adjacency``'s edges) in the form the
    layers return: ``(edge_index, alpha)`` for an index tensor, ``(adj, alpha)`` with the
    weights as the values of a ``torch.sparse`` adjacency, or a ``SparseTensor`` holding
    them."""
    if isinstance(adjacency, SparseTensor):
        return adjacency.set_value(alpha, layout='coo')
    if is_torch_sparse_tensor(adjacency):
        return set_sparse_value(adjacency, alpha), alpha
    return adjacency, alpha


# Helpers #######################################################################################

def _num_targets(edge_index: Adj, options: EdgeOptions, size: Size, num_src: int,
                 num_x_dst: Optional[int]) -> int:
    # Mirrors PyG's size inference in `MessagePassing._collect`.
    if isinstance(edge_index, SparseTensor) or is_torch_sparse_tensor(edge_index):
        if options.flow == 'target_to_source':  # as in PyG
            raise ValueError("flow='target_to_source' is invalid with a sparse adjacency "
                             "(rows are targets); pass the transposed adjacency instead, "
                             "e.g. 'adj_t.t()'")
        num_rows, num_cols = edge_index.size(0), edge_index.size(1)
        if num_cols != num_src:
            raise ValueError(f"The sparse adjacency has {num_cols} columns (sources) but "
                             f"'x' has {num_src} source nodes")
        if num_x_dst is not None and num_x_dst != num_rows:
            raise ValueError(f"The sparse adjacency has {num_rows} rows (targets) but "
                             f"'x_dst' has {num_x_dst} nodes")
        return num_rows
    if size is not None:
        if size[0] is not None and size[0] != num_src:
            raise ValueError(f"'size[0]' is {size[0]} but 'x' has {num_src} source nodes")
        if size[1] is not None and num_x_dst is not None and size[1] != num_x_dst:
            raise ValueError(f"'size[1]' is {size[1]} but 'x_dst' has {num_x_dst} target "
                             f"nodes")
        if size[1] is not None:
            return size[1]
    return num_x_dst if num_x_dst is not None else num_src


def _check_form(edge_index: Adj, layer: str) -> None:
    if isinstance(edge_index, SparseTensor) or is_torch_sparse_tensor(edge_index):
        return
    if not isinstance(edge_index, Tensor):
        raise TypeError(f"{layer} expects 'edge_index' as a [2, num_edges] tensor, a "
                        f"torch.sparse adjacency or a SparseTensor (got "
                        f"{type(edge_index).__name__})")
    if edge_index.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{layer} expects 'edge_index' of dtype int64 or int32 (got "
                        f"{edge_index.dtype})")
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"{layer} expects 'edge_index' of shape [2, num_edges] (got "
                         f"{tuple(edge_index.shape)})")


def _check_edge_attr(edge_attr: Tensor, edge_index: Adj, options: EdgeOptions) -> None:
    num_edges = (edge_index.nnz() if isinstance(edge_index, SparseTensor) else
                 edge_index._nnz() if is_torch_sparse_tensor(edge_index) else
                 edge_index.size(1))
    width = 1 if edge_attr.dim() == 1 else edge_attr.size(-1)
    if edge_attr.dim() not in (1, 2) or edge_attr.size(0) != num_edges:
        raise ValueError(f"{options.layer} expects 'edge_attr' of shape [{num_edges}, "
                         f"{options.edge_dim}] (got {tuple(edge_attr.shape)})")
    if width != options.edge_dim:
        raise ValueError(f"{options.layer} was built with edge_dim={options.edge_dim} but "
                         f"'edge_attr' has {width} features per edge")
    if not edge_attr.is_floating_point():
        raise TypeError(f"{options.layer} expects floating-point 'edge_attr' (got "
                        f"{edge_attr.dtype})")


def _loop_nodes(options: EdgeOptions, num_src: int, num_x_dst: Optional[int],
                size: Size) -> int:
    """How many self-loops the layer adds (0 without): one per node that is both a source
    and a target, as in PyG's layers."""
    if not options.add_self_loops:
        return 0
    num_nodes = num_src if num_x_dst is None else min(num_src, num_x_dst)
    return min(size) if size is not None else num_nodes


def _with_self_loops(edge_index: Adj, options: EdgeOptions, loop_nodes: int) -> _Looped:
    if not options.add_self_loops:
        return _Looped(edge_index, None, None, 0, None)
    if isinstance(edge_index, SparseTensor):
        return _Looped(torch_sparse.set_diag(edge_index), None, None, loop_nodes, None)
    if is_torch_sparse_tensor(edge_index):
        looped, _ = add_self_loops(remove_self_loops(edge_index)[0],
                                   fill_value=options.fill_value, num_nodes=loop_nodes)
        return _Looped(looped, None, None, loop_nodes, None)
    # PyG's 'min'/'max' loop features give NaN gradients with int32 indices, so the loops
    # are added to the int64 index (as PyG returns it: int64 once loops are added).
    index = edge_index.long()
    kept_index, _ = remove_self_loops(index)
    looped, _ = add_self_loops(kept_index, num_nodes=loop_nodes)
    if options.edge_dim is None:  # no features to extend
        return _Looped(looped, None, None, loop_nodes, None)
    num_kept = kept_index.size(1)
    kept = (index[0] != index[1]).nonzero().view(-1) if num_kept != index.size(1) else None
    # The kept edges lead the looped index: its row 1 there is what PyG scatters over.
    loop_col = looped.as_subclass(Tensor)[1, :num_kept].expand(2, -1)
    return _Looped(looped, kept, loop_col, loop_nodes, None)


def _looped_features(edge_attr: Tensor, looped: _Looped,
                     fill_value: Union[float, Tensor, str, None]) -> Tensor:
    """``edge_attr`` without the self-loops' rows, then the new self-loops' features, as
    PyG's ``remove_self_loops`` + ``add_self_loops`` give them."""
    if looped.kept is not None:
        edge_attr = edge_attr.index_select(0, looped.kept)
    loop_attr = compute_loop_attr(looped.loop_col, edge_attr, looped.loop_nodes, False,
                                  fill_value)
    return torch.cat([edge_attr, loop_attr], dim=0)


def _sparse_values(adjacency: Adj) -> OptTensor:
    if isinstance(adjacency, SparseTensor):
        return adjacency.storage.value()
    if is_torch_sparse_tensor(adjacency):
        return adjacency.values()
    return None


def _source_target(edge_index: Adj, flow: str) -> Tuple[Tensor, Tensor]:
    """Source and target of each edge, in the order the attention is returned."""
    if isinstance(edge_index, SparseTensor):
        row, col, _ = edge_index.coo()
        return col, row
    if is_torch_sparse_tensor(edge_index):
        # Not `to_edge_index` for COO: its in-place `_coalesced_` bumps the version counter
        # that the values (maybe the edge features) share, breaking their backward.
        index = (edge_index._indices() if edge_index.layout == torch.sparse_coo else
                 to_edge_index(edge_index)[0])
        return index[1], index[0]
    if flow == 'source_to_target':
        return edge_index[0], edge_index[1]
    return edge_index[1], edge_index[0]
