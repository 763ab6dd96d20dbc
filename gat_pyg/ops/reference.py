"""Pure-PyTorch segment attention: the test oracle, and what runs on a device without a
kernel (or with the ``reference`` backend).

Every step goes through PyG's own utilities (``softmax``, ``segment``), so the result is
PyG's arithmetic, and they in turn use ``torch_scatter`` when it is installed.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.utils import segment, softmax

from gat_pyg.ops.graph import SegmentGraph

_MASK32 = 0xFFFFFFFF


def _mul32(x: Tensor, c: int) -> Tensor:
    # (x * c) mod 2^32 for x < 2^32, split in 16-bit halves so no int64 product overflows.
    lo = x * (c & 0xFFFF)
    hi = ((x * (c >> 16)) & 0xFFFF) << 16
    return (lo + hi) & _MASK32


def _mix32(x: Tensor) -> Tensor:
    # A 32-bit integer finaliser (a bijection, "lowbias32"); mirrored in csrc/dropout_hash.h.
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def dropout_hash(seed: Tensor, edge_id: Tensor, num_heads: int) -> Tensor:
    """Uniform 32-bit hashes ``[E, num_heads]`` of ``(seed, edge_id, head)``.

    Attention dropout keeps edge ``e``'s head ``h`` iff its hash is at least
    ``dropout_threshold(p)``. The kernels evaluate the same hash per edge instead of
    storing a mask, so every implementation drops the same entries for the same seed.
    """
    seed = seed.long()
    key = _mix32((seed & _MASK32) ^ _mix32(seed >> 32))
    heads = torch.arange(num_heads, device=edge_id.device)
    counter = edge_id.long().unsqueeze(-1) * num_heads + heads
    hashed = _mix32((counter & _MASK32) ^ key)
    return _mix32(hashed ^ (counter >> 32))


def dropout_threshold(p: float) -> int:
    """The hash value below which an entry is dropped: ``floor(p * 2^32)``."""
    return min(int(p * 4294967296.0), 4294967296)


def apply_dropout(alpha: Tensor, p: float, seed: Tensor, edge_id: Tensor) -> Tensor:
    """Inverted dropout on attention weights ``alpha [E, H]`` of edges ``edge_id``."""
    if p <= 0.0:
        return alpha
    if p >= 1.0:
        return alpha * 0.0
    keep = dropout_hash(seed, edge_id, alpha.size(-1)) >= dropout_threshold(p)
    return alpha * keep.to(alpha.dtype) * (1.0 / (1.0 - p))


def softmax_dropout(score: Tensor, index: Tensor, ptr: Optional[Tensor], num_targets: int,
                    dropout: float = 0.0, seed: Optional[Tensor] = None,
                    edge_id: Optional[Tensor] = None) -> Tensor:
    """Attention ``[E, H]`` from final scores: softmax over each target's edges (``index``,
    or sorted ``ptr``), then dropout of the normalised weights."""
    alpha = softmax(score, index, ptr, num_targets)
    if dropout > 0.0:
        assert seed is not None and edge_id is not None
        alpha = apply_dropout(alpha, dropout, seed, edge_id)
    return alpha


def attention_weights(score: Tensor, index: Tensor, ptr: Optional[Tensor], num_targets: int,
                      negative_slope: float, dropout: float = 0.0,
                      seed: Optional[Tensor] = None,
                      edge_id: Optional[Tensor] = None) -> Tensor:
    """Attention ``[E, H]`` from additive scores: LeakyReLU, then
    :func:`softmax_dropout`."""
    return softmax_dropout(F.leaky_relu(score, negative_slope), index, ptr, num_targets,
                           dropout, seed, edge_id)


def vector_scores(x_j: Tensor, x_i: Tensor, att: Tensor, edge_term: Optional[Tensor],
                  negative_slope: float) -> Tensor:
    """GATv2's scores ``[E, H]``: ``att . LeakyReLU(x_i + x_j [+ edge_term])`` per head, from
    the rows ``[E, H, C]`` of each edge's target and source (in PyG's order of additions)."""
    z = x_i + x_j
    if edge_term is not None:
        z = z + edge_term
    return (F.leaky_relu(z, negative_slope) * att.view(1, *x_j.shape[1:])).sum(dim=-1)


def _attend(graph: SegmentGraph, score: Tensor, values: Tensor, dst: Tensor, dropout: float,
            seed: Optional[Tensor], return_alpha: bool) -> Tuple[Tensor, Optional[Tensor]]:
    """Softmax and dropout of the CSR-order scores, the weighted sum of the sources' values,
    and the attention in the caller's edge order if asked for."""
    alpha = softmax_dropout(score, dst, graph.ptr, graph.num_dst, dropout, seed, graph.perm)
    out = segment(alpha.unsqueeze(-1) * values.index_select(0, graph.src), graph.ptr,
                  reduce='sum')
    if not return_alpha:
        return out, None
    return out, torch.empty_like(alpha).index_copy_(0, graph.perm, alpha)


def segment_attention(graph: SegmentGraph, h: Tensor, a_src: Tensor, a_dst: Optional[Tensor],
                      a_edge: Optional[Tensor], negative_slope: float, dropout: float = 0.0,
                      seed: Optional[Tensor] = None,
                      return_alpha: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
    r"""Reference segment attention with additive scores (GAT).

    .. math::
        \alpha_{ij} = \mathrm{softmax}_{j \in \mathcal{N}(i)}\left(\mathrm{LeakyReLU}
        (a^{src}_j + a^{dst}_i + a^{edge}_{ij})\right), \qquad
        \mathrm{out}_i = \sum_{j \in \mathcal{N}(i)} \mathrm{dropout}(\alpha_{ij})\, h_j

    Args:
        graph: the edges, sorted (:func:`~gat_pyg.ops.graph.build_segment_graph`).
        h: source values :math:`[N_{src}, H, C]`.
        a_src: per-source score terms :math:`[N_{src}, H]`.
        a_dst: per-target score terms :math:`[N_{dst}, H]`, or ``None`` for zero.
        a_edge: per-edge score terms :math:`[E, H]` in the caller's edge order, or ``None``.
        negative_slope: LeakyReLU slope.
        dropout: attention dropout probability (inverted dropout after the softmax).
        seed: ``int64`` scalar tensor seeding :func:`dropout_hash` (needed if ``dropout > 0``).
        return_alpha: also return the (dropped-out) attention :math:`[E, H]` in the caller's
            edge order.

    Returns:
        ``(out [N_dst, H, C], alpha [E, H] or None)``; a target without incoming edges gets
        zeros.
    """
    graph = graph.long()  # PyG's utilities take int64 (a no-op in the reference's layout)
    score = a_src.index_select(0, graph.src)
    dst = graph.dst()
    if a_dst is not None:
        score = score + a_dst.index_select(0, dst)
    if a_edge is not None:
        score = score + a_edge.index_select(0, graph.perm)
    score = F.leaky_relu(score, negative_slope)
    return _attend(graph, score, h, dst, dropout, seed, return_alpha)


def segment_attention_v2(graph: SegmentGraph, x_l: Tensor, x_r: Tensor, att: Tensor,
                         edge_attr: Optional[Tensor], w_edge: Optional[Tensor],
                         negative_slope: float, dropout: float = 0.0,
                         seed: Optional[Tensor] = None,
                         return_alpha: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
    r"""Reference segment attention with vector scores (GATv2).

    .. math::
        s_{ij} = \mathbf{a}^{\top} \mathrm{LeakyReLU}\left(\mathbf{x}^{r}_i +
        \mathbf{x}^{l}_j + \mathbf{W}_e \mathbf{e}_{ij}\right), \qquad
        \mathrm{out}_i = \sum_{j \in \mathcal{N}(i)}
        \mathrm{dropout}(\mathrm{softmax}_j(s_{ij}))\, \mathbf{x}^{l}_j

    per head, the sum running over the head's :math:`C` channels.

    Args:
        graph: the edges, sorted (:func:`~gat_pyg.ops.graph.build_segment_graph`).
        x_l: source values :math:`[N_{src}, H, C]`.
        x_r: target terms :math:`[N_{dst}, H, C]`.
        att: the attention vector :math:`[H, C]`.
        edge_attr: edge features :math:`[E, D]` in the caller's edge order, or ``None``.
        w_edge: the edge projection :math:`\mathbf{W}_e` :math:`[H C, D]`; ``None`` with
            ``edge_attr`` means ``edge_attr`` is the edge term itself, :math:`[E, H C]`.
        negative_slope, dropout, seed, return_alpha: as for :func:`segment_attention`.

    Returns:
        ``(out [N_dst, H, C], alpha [E, H] or None)``; a target without incoming edges gets
        zeros.
    """
    graph = graph.long()
    dst = graph.dst()
    edge_term = None
    if edge_attr is not None:
        term = edge_attr if w_edge is None else edge_attr @ w_edge.t()
        edge_term = term.view(-1, *x_l.shape[1:]).index_select(0, graph.perm)
    score = vector_scores(x_l.index_select(0, graph.src), x_r.index_select(0, dst), att,
                          edge_term, negative_slope)
    return _attend(graph, score, x_l, dst, dropout, seed, return_alpha)
