from typing import Optional, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.nn import MLP
from torch_geometric.nn.aggr import Aggregation
from torch_geometric.nn.inits import reset

from gat_pyg import ops
from gat_pyg.ops.graph import segment_graph_from_ptr


class GlobalAttentionPool(Aggregation):
    r"""Global attention pooling: a graph-level readout that weighs each node of a graph by
    an attention distribution over that graph's nodes,

    .. math::
        \mathbf{r}_g^{(k)} = \sum_{i \in \mathcal{V}_g} \beta_i^{(k)}\,
        h_{\mathbf{\Theta}}(\mathbf{x}_i), \qquad
        \beta_i^{(k)} = \frac{\exp\big(h_{\mathrm{gate}}(\mathbf{x}_i)_k\big)}
        {\sum_{j \in \mathcal{V}_g} \exp\big(h_{\mathrm{gate}}(\mathbf{x}_j)_k\big)},

    for heads :math:`k = 1, \ldots, K`, whose readouts are concatenated or averaged. With
    :math:`K = 1` this is :class:`torch_geometric.nn.aggr.AttentionalAggregation` with a
    node-level gate.

    The softmax and the weighted sum run in the package's segment-attention operator
    (:func:`gat_pyg.ops.segment_attention`, on the kernel that :class:`GATConv` uses), with
    the graphs of a batch as the segments and their nodes as the members: max-subtracted,
    deterministic, and without per-node temporaries of the weighted values. Nodes
    must therefore be grouped by graph, which PyG's :class:`~torch_geometric.loader.DataLoader`
    always does: ``index`` must be sorted (a :class:`ValueError` otherwise). A graph without
    nodes pools to zeros.

    Works as a PyG aggregation (pass it wherever PyG takes an
    :class:`~torch_geometric.nn.aggr.Aggregation`) and as a plain readout module:
    ``pool(x, batch)``.

    Args:
        gate_nn (torch.nn.Module): :math:`h_{\mathrm{gate}}`, mapping node features
            :math:`[N, F]` to scores :math:`[N, K]` (or :math:`[N]` when :math:`K = 1`).
            A :class:`torch_geometric.nn.MLP` is called with the batch vector, as in PyG.
        nn (torch.nn.Module, optional): :math:`h_{\mathbf{\Theta}}`, mapping node features
            :math:`[N, F]` to the pooled values :math:`[N, F']`; identity if :obj:`None`.
            (default: :obj:`None`)
        heads (int, optional): Number of attention heads :math:`K`. (default: :obj:`1`)
        concat (bool, optional): Concatenate the per-head readouts (:math:`[B, K F']`) or,
            if :obj:`False`, average them (:math:`[B, F']`). (default: :obj:`True`)

    Shapes:
        - **input:** node features :math:`(N, F)`, sorted graph index :math:`(N)` or CSR
          offsets :math:`(B + 1)`
        - **output:** graph features :math:`(B, K F')` (or :math:`(B, F')` if
          :obj:`concat=False`); with :obj:`return_attention_weights=True`, also
          :math:`\beta` :math:`(N, K)`
    """
    def __init__(self, gate_nn: torch.nn.Module, nn: Optional[torch.nn.Module] = None,
                 heads: int = 1, concat: bool = True) -> None:
        super().__init__()
        if heads < 1:
            raise ValueError(f"'heads' must be at least 1 (got {heads})")
        self.gate_nn = gate_nn
        self.nn = nn
        self.heads = heads
        self.concat = concat

    def reset_parameters(self) -> None:
        reset(self.gate_nn)
        reset(self.nn)

    def forward(self, x: Tensor, index: Optional[Tensor] = None, ptr: Optional[Tensor] = None,
                dim_size: Optional[int] = None, dim: int = -2,
                return_attention_weights: bool = False
                ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        r"""Pools the nodes of each graph.

        Args:
            x (torch.Tensor): Node features :math:`(N, F)`.
            index (torch.Tensor, optional): The graph of each node (``batch``), sorted.
            ptr (torch.Tensor, optional): CSR offsets of the graphs :math:`(B + 1)`
                (used instead of ``index`` if given).
            dim_size (int, optional): Number of graphs :math:`B` (default: from ``ptr``,
                else ``index.max() + 1``).
            dim (int, optional): Must be :obj:`0` or :obj:`-2`.
            return_attention_weights (bool, optional): Also return :math:`\beta`
                :math:`(N, K)`. (default: :obj:`False`)
        """
        self.assert_two_dimensional_input(x, dim)
        num_nodes = x.size(0)
        ptr = self._graph_offsets(index, ptr, dim_size, num_nodes, x.device)

        gate = (self.gate_nn(x, batch=index, batch_size=dim_size)
                if isinstance(self.gate_nn, MLP) else self.gate_nn(x))
        if isinstance(self.nn, MLP):
            x = self.nn(x, batch=index, batch_size=dim_size)
        elif self.nn is not None:
            x = self.nn(x)
        if gate.dim() == 1:
            gate = gate.unsqueeze(-1)
        if gate.shape != (num_nodes, self.heads):
            raise ValueError(f"'gate_nn' must map the {num_nodes} nodes to scores of shape "
                             f"[{num_nodes}, {self.heads}] (one per head), got "
                             f"{tuple(gate.shape)}")
        if x.dim() != 2 or x.size(0) != num_nodes:
            raise ValueError(f"'nn' must map the {num_nodes} nodes to features of shape "
                             f"[{num_nodes}, F'], got {tuple(x.shape)}")
        if gate.dtype != x.dtype:
            raise TypeError(f"'gate_nn' and 'nn' outputs must share a dtype (got "
                            f"{gate.dtype} and {x.dtype})")

        # Every head pools the same values: [N, K, F'] (a copy only when K > 1, since the
        # operator reads each member's heads as one contiguous row).
        values = x.unsqueeze(1).expand(-1, self.heads, -1)
        values = values if self.heads == 1 else values.contiguous()
        graph = segment_graph_from_ptr(ptr, num_nodes, ops.graph_layout(x.device))
        # The gate is the score as is: a LeakyReLU of slope 1 is the identity.
        out, beta = ops.segment_attention(graph, values, gate.contiguous(), None, None,
                                          negative_slope=1.0,
                                          return_alpha=return_attention_weights)
        out = out.reshape(out.size(0), -1) if self.concat else out.mean(dim=1)
        if return_attention_weights:
            assert beta is not None
            return out, beta
        return out

    @staticmethod
    def _graph_offsets(index: Optional[Tensor], ptr: Optional[Tensor],
                       dim_size: Optional[int], num_nodes: int,
                       device: torch.device) -> Tensor:
        """Validated CSR offsets of the graphs, from ``ptr`` or the sorted ``index``."""
        if ptr is not None:
            if ptr.dim() != 1 or ptr.dtype not in (torch.int64, torch.int32):
                raise ValueError(f"'ptr' must be a 1-D int64 or int32 tensor (got shape "
                                 f"{tuple(ptr.shape)}, {ptr.dtype})")
            if ptr.numel() == 0 or int(ptr[0]) != 0 or int(ptr[-1]) != num_nodes:
                raise ValueError(f"'ptr' must start at 0 and end at the number of nodes "
                                 f"({num_nodes})")
            if bool((ptr[1:] < ptr[:-1]).any()):
                raise ValueError("'ptr' must be non-decreasing")
            return ptr.long()
        if index is None:
            index = torch.zeros(num_nodes, dtype=torch.long, device=device)
        if index.dim() != 1 or index.numel() != num_nodes:
            raise ValueError(f"'index' (batch) must have one entry per node: shape "
                             f"[{num_nodes}] (got {tuple(index.shape)})")
        if index.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"'index' (batch) must be int64 or int32 (got {index.dtype})")
        num_graphs = dim_size
        if num_nodes > 0:
            low, high = (int(v) for v in torch.aminmax(index))
            if low < 0:
                raise IndexError(f"'index' (batch) holds a negative graph index ({low})")
            if num_graphs is None:
                num_graphs = high + 1
            elif high >= num_graphs:
                raise ValueError(f"'index' (batch) holds graph index {high}, out of range "
                                 f"for dim_size={num_graphs} graphs")
            if bool((index[1:] < index[:-1]).any()):
                raise ValueError("GlobalAttentionPool needs the nodes grouped by graph: "
                                 "'index' (batch) must be sorted, as PyG's DataLoader "
                                 "makes it (sort the nodes by graph first)")
        num_graphs = 0 if num_graphs is None else num_graphs
        return torch._convert_indices_from_coo_to_csr(index.long(), num_graphs)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(gate_nn={self.gate_nn}, nn={self.nn}, '
                f'heads={self.heads}, concat={self.concat})')
