"""Segment attention: the operators behind every attention form of the package.

:func:`segment_attention` (additive scores: GAT, attention pooling) and
:func:`segment_attention_v2` (vector scores: GATv2) take a graph sorted by target
(:class:`SegmentGraph`), per-source values and score terms, and return the
attention-weighted sum per target. Each runs the kernel of the tensors' device type where
the backend says so (:mod:`gat_pyg.ops.backends`:
``GAT_PYG_BACKEND=auto|kernel|reference``), otherwise the pure-PyTorch reference
(:mod:`gat_pyg.ops.reference`), which is also the test oracle.
:func:`available_kernels` lists the kernels and whether they load. See
``docs/architecture.md`` for the design and for adding a kernel.
"""
from typing import Optional, Tuple

from torch import Tensor

from gat_pyg.ops import reference
from gat_pyg.ops._library import segment_attention_op, segment_attention_v2_op
from gat_pyg.ops.backends import (BACKENDS, Kernel, KernelStatus, available_kernels,
                                  get_backend, graph_layout, register_kernel, set_backend,
                                  use_backend, uses_kernel)
from gat_pyg.ops.graph import (GraphLayout, SegmentGraph, build_segment_graph, graph_cache,
                               segment_graph_from_ptr)
from gat_pyg.ops import cpu  # registers the CPU kernel (built on first use)

__all__ = ['SegmentGraph', 'GraphLayout', 'build_segment_graph', 'segment_graph_from_ptr',
           'graph_cache', 'segment_attention', 'segment_attention_v2', 'graph_layout',
           'available_kernels', 'register_kernel', 'Kernel', 'KernelStatus', 'set_backend',
           'get_backend', 'use_backend', 'BACKENDS']


def segment_attention(graph: SegmentGraph, h: Tensor, a_src: Tensor, a_dst: Optional[Tensor],
                      a_edge: Optional[Tensor], negative_slope: float, dropout: float = 0.0,
                      seed: Optional[Tensor] = None,
                      return_alpha: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
    """Additive-score segment attention on the implementation that the backend picks for
    ``h``'s device; arguments and result as :func:`gat_pyg.ops.reference.segment_attention`.
    ``graph`` must have that implementation's layout (:func:`graph_layout`)."""
    if uses_kernel(h.device.type):
        return segment_attention_op(graph, h, a_src, a_dst, a_edge, negative_slope, dropout,
                                    seed, return_alpha)
    return reference.segment_attention(graph, h, a_src, a_dst, a_edge, negative_slope,
                                       dropout, seed, return_alpha)


def segment_attention_v2(graph: SegmentGraph, x_l: Tensor, x_r: Tensor, att: Tensor,
                         edge_attr: Optional[Tensor], w_edge: Optional[Tensor],
                         negative_slope: float, dropout: float = 0.0,
                         seed: Optional[Tensor] = None,
                         return_alpha: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
    """Vector-score segment attention on the implementation that the backend picks for
    ``x_l``'s device; arguments and result as
    :func:`gat_pyg.ops.reference.segment_attention_v2`."""
    if uses_kernel(x_l.device.type):
        return segment_attention_v2_op(graph, x_l, x_r, att, edge_attr, w_edge,
                                       negative_slope, dropout, seed, return_alpha)
    return reference.segment_attention_v2(graph, x_l, x_r, att, edge_attr, w_edge,
                                          negative_slope, dropout, seed, return_alpha)
