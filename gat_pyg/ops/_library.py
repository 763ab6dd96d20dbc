"""The segment-attention operators, defined once for every device with :mod:`torch.library`:
their schemas, fake kernels and autograd formulas. No device code lives here: a kernel
registers its implementation of the operators for its device type (the C++ extension with
``TORCH_LIBRARY_IMPL``, a Python kernel with :func:`torch.library.register_kernel`).

Two families, one per score form:

- additive (GAT): ``gat_pyg::segment_attention_fwd`` returns ``(out, lse, alpha,
  out_slope, slope_sum)``: the output, one log-sum-exp per (target, head), the attention
  (empty unless asked for) and, when ``a_dst`` needs a gradient, the two per-target sums
  its gradient is made of; ``gat_pyg::segment_attention_bwd`` returns the gradients of
  ``h``, ``a_src``, ``a_dst`` and ``a_edge``.
- vector (GATv2): ``gat_pyg::segment_attention_v2_fwd`` returns ``(out, lse, alpha)``,
  ``lse`` in float64 whatever the inputs' dtype (backward's attention, recomputed from it,
  then keeps the softmax's own precision); ``gat_pyg::segment_attention_v2_bwd`` returns the
  gradients of ``x_l``, ``x_r``, ``att``, ``edge_attr`` and ``w_edge``.

A gradient that ``output_mask`` does not ask for is an empty tensor. The formulas, and what
a kernel may assume of its inputs, are in ``docs/architecture.md``.
"""
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from gat_pyg.ops.graph import SegmentGraph

__all__ = ['FORWARD', 'BACKWARD', 'FORWARD_V2', 'BACKWARD_V2', 'OPERATORS',
           'segment_attention_op', 'segment_attention_v2_op']

FORWARD = 'gat_pyg::segment_attention_fwd'
BACKWARD = 'gat_pyg::segment_attention_bwd'
FORWARD_V2 = 'gat_pyg::segment_attention_v2_fwd'
BACKWARD_V2 = 'gat_pyg::segment_attention_v2_bwd'
OPERATORS = (FORWARD, BACKWARD, FORWARD_V2, BACKWARD_V2)  # what a kernel implements
_GRAPH = ('Tensor ptr, Tensor src, Tensor perm, Tensor src_ptr, Tensor csc_dst, '
          'Tensor csc_slot')

torch.library.define(
    FORWARD,
    f'({_GRAPH}, Tensor h, Tensor a_src, Tensor? a_dst, Tensor? a_edge, '
    'float negative_slope, float dropout, Tensor? seed, bool return_alpha, '
    'bool save_for_a_dst) -> '
    '(Tensor out, Tensor lse, Tensor alpha, Tensor out_slope, Tensor slope_sum)')
torch.library.define(
    BACKWARD,
    f'(Tensor grad_out, Tensor? grad_alpha, {_GRAPH}, Tensor h, Tensor a_src, Tensor? a_dst, '
    'Tensor? a_edge, Tensor out, Tensor lse, Tensor out_slope, Tensor slope_sum, '
    'float negative_slope, float dropout, Tensor? seed, bool[4] output_mask) -> '
    '(Tensor grad_h, Tensor grad_a_src, Tensor grad_a_dst, Tensor grad_a_edge)')
torch.library.define(
    FORWARD_V2,
    f'({_GRAPH}, Tensor x_l, Tensor x_r, Tensor att, Tensor? edge_attr, Tensor? w_edge, '
    'float negative_slope, float dropout, Tensor? seed, bool return_alpha) -> '
    '(Tensor out, Tensor lse, Tensor alpha)')
torch.library.define(
    BACKWARD_V2,
    f'(Tensor grad_out, Tensor? grad_alpha, {_GRAPH}, Tensor x_l, Tensor x_r, Tensor att, '
    'Tensor? edge_attr, Tensor? w_edge, Tensor out, Tensor lse, '
    'float negative_slope, float dropout, Tensor? seed, bool[5] output_mask) -> '
    '(Tensor grad_x_l, Tensor grad_x_r, Tensor grad_att, Tensor grad_edge_attr, '
    'Tensor grad_w_edge)')


# Fake kernels and autograd #####################################################################

def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype == torch.bfloat16 else dtype


@torch.library.register_fake(FORWARD)
def _fake_forward(ptr, src, perm, src_ptr, csc_dst, csc_slot, h, a_src, a_dst, a_edge,
                  negative_slope, dropout, seed, return_alpha, save_for_a_dst):
    torch._check(h.dim() == 3, lambda: "segment_attention: 'h' must be 3-D")
    num_dst = ptr.shape[0] - 1
    heads, channels = h.shape[1], h.shape[2]
    acc = _acc_dtype(h.dtype)
    slope_rows = num_dst if save_for_a_dst and a_dst is not None else 0
    return (h.new_empty((num_dst, heads, channels)),
            h.new_empty((num_dst, heads), dtype=acc),
            h.new_empty((src.shape[0] if return_alpha else 0, heads)),
            h.new_empty((slope_rows, heads, channels)),
            h.new_empty((slope_rows, heads), dtype=acc))


def _fake_gradients(output_mask, inputs, like):
    """A gradient shaped like each input asked for, an empty one for the others."""
    return tuple(t.new_empty(t.shape) if flag and t is not None else like.new_empty((0, ))
                 for flag, t in zip(output_mask, inputs))


@torch.library.register_fake(BACKWARD)
def _fake_backward(grad_out, grad_alpha, ptr, src, perm, src_ptr, csc_dst, csc_slot, h, a_src,
                   a_dst, a_edge, out, lse, out_slope, slope_sum, negative_slope,
                   dropout, seed, output_mask):
    return _fake_gradients(output_mask, (h, a_src, a_dst, a_edge), h)


def _setup_context(ctx, inputs, output):
    (ptr, src, perm, src_ptr, csc_dst, csc_slot, h, a_src, a_dst, a_edge, negative_slope,
     dropout, seed, return_alpha, save_for_a_dst) = inputs
    out, lse, _, out_slope, slope_sum = output
    ctx.save_for_backward(ptr, src, perm, src_ptr, csc_dst, csc_slot, h, a_src, a_dst, a_edge,
                          out, lse, out_slope, slope_sum, seed)
    ctx.negative_slope = negative_slope
    ctx.dropout = dropout
    ctx.return_alpha = return_alpha
    ctx.save_for_a_dst = save_for_a_dst
    ctx.mark_non_differentiable(lse, out_slope, slope_sum)
    # Unused output gradients stay None instead of being materialised as zeros (that would
    # cost an [N_dst, H, C] and several [N_dst, H] fills per backward pass).
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_out, grad_lse, grad_alpha, grad_out_slope, grad_slope_sum):
    (ptr, src, perm, src_ptr, csc_dst, csc_slot, h, a_src, a_dst, a_edge, out, lse, out_slope,
     slope_sum, seed) = ctx.saved_tensors
    needs = ctx.needs_input_grad
    mask = [bool(needs[6]), bool(needs[7]), bool(needs[8]) and a_dst is not None,
            bool(needs[9]) and a_edge is not None]
    if mask[2] and not ctx.save_for_a_dst:
        raise RuntimeError("segment_attention_fwd was called with save_for_a_dst=False, so "
                           "it cannot give the gradient of 'a_dst'")
    if grad_out is None:
        grad_out = h.new_zeros((ptr.shape[0] - 1,) + tuple(h.shape[1:]))
    if not ctx.return_alpha:
        grad_alpha = None
    elif grad_alpha is not None:
        grad_alpha = grad_alpha.contiguous()
    grad_h, grad_a_src, grad_a_dst, grad_a_edge = torch.ops.gat_pyg.segment_attention_bwd(
        grad_out.contiguous(), grad_alpha, ptr, src, perm, src_ptr, csc_dst, csc_slot, h,
        a_src, a_dst, a_edge, out, lse, out_slope, slope_sum, ctx.negative_slope,
        ctx.dropout, seed, mask)
    return (None, None, None, None, None, None,
            grad_h if mask[0] else None, grad_a_src if mask[1] else None,
            grad_a_dst if mask[2] else None, grad_a_edge if mask[3] else None,
            None, None, None, None, None)


torch.library.register_autograd(FORWARD, _backward, setup_context=_setup_context)


@torch.library.register_fake(FORWARD_V2)
def _fake_forward_v2(ptr, src, perm, src_ptr, csc_dst, csc_slot, x_l, x_r, att, edge_attr,
                     w_edge, negative_slope, dropout, seed, return_alpha):
    torch._check(x_l.dim() == 3, lambda: "segment_attention_v2: 'x_l' must be 3-D")
    num_dst = ptr.shape[0] - 1
    heads, channels = x_l.shape[1], x_l.shape[2]
    return (x_l.new_empty((num_dst, heads, channels)),
            x_l.new_empty((num_dst, heads), dtype=torch.float64),
            x_l.new_empty((src.shape[0] if return_alpha else 0, heads)))


@torch.library.register_fake(BACKWARD_V2)
def _fake_backward_v2(grad_out, grad_alpha, ptr, src, perm, src_ptr, csc_dst, csc_slot, x_l,
                      x_r, att, edge_attr, w_edge, out, lse, negative_slope, dropout, seed,
                      output_mask):
    return _fake_gradients(output_mask, (x_l, x_r, att, edge_attr, w_edge), x_l)


def _setup_context_v2(ctx, inputs, output):
    (ptr, src, perm, src_ptr, csc_dst, csc_slot, x_l, x_r, att, edge_attr, w_edge,
     negative_slope, dropout, seed, return_alpha) = inputs
    out, lse, _ = output
    ctx.save_for_backward(ptr, src, perm, src_ptr, csc_dst, csc_slot, x_l, x_r, att,
                          edge_attr, w_edge, out, lse, seed)
    ctx.negative_slope = negative_slope
    ctx.dropout = dropout
    ctx.return_alpha = return_alpha
    ctx.mark_non_differentiable(lse)
    ctx.set_materialize_grads(False)


def _backward_v2(ctx, grad_out, grad_lse, grad_alpha):
    (ptr, src, perm, src_ptr, csc_dst, csc_slot, x_l, x_r, att, edge_attr, w_edge, out, lse,
     seed) = ctx.saved_tensors
    needs = ctx.needs_input_grad
    mask = [bool(needs[6]), bool(needs[7]), bool(needs[8]),
            bool(needs[9]) and edge_attr is not None, bool(needs[10]) and w_edge is not None]
    if grad_out is None:
        grad_out = torch.zeros_like(out)
    if not ctx.return_alpha:
        grad_alpha = None
    elif grad_alpha is not None:
        grad_alpha = grad_alpha.contiguous()
    grads = torch.ops.gat_pyg.segment_attention_v2_bwd(
        grad_out.contiguous(), grad_alpha, ptr, src, perm, src_ptr, csc_dst, csc_slot, x_l,
        x_r, att, edge_attr, w_edge, out, lse, ctx.negative_slope, ctx.dropout, seed, mask)
    return ((None, ) * 6 + tuple(grad if flag else None for grad, flag in zip(grads, mask))
            + (None, ) * 4)


torch.library.register_autograd(FORWARD_V2, _backward_v2, setup_context=_setup_context_v2)


# The checked entry ##############################################################################

_FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16)
_INDEX_DTYPES = (torch.int64, torch.int32)
_GRAPH_TENSORS = ('ptr', 'src', 'perm', 'src_ptr', 'csc_dst', 'csc_slot')


def _check_float(name: str, t: Optional[Tensor], like: Tensor,
                 shape: Tuple[int, ...], like_name: str = 'h') -> None:
    if t is None:
        return
    if not isinstance(t, Tensor):
        raise TypeError(f"segment_attention: '{name}' must be a tensor (got "
                        f"{type(t).__name__})")
    if t.dtype != like.dtype:
        raise TypeError(f"segment_attention: '{name}' has dtype {t.dtype} but '{like_name}' "
                        f"has {like.dtype}; all float inputs must share one dtype")
    if t.device != like.device:
        raise ValueError(f"segment_attention: '{name}' is on {t.device} but '{like_name}' is "
                         f"on {like.device}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"segment_attention: '{name}' must have shape {tuple(shape)} (got "
                         f"{tuple(t.shape)})")


def _check_graph(graph: SegmentGraph, h: Tensor, values: str = 'h') -> List[Tensor]:
    if not isinstance(graph, SegmentGraph):
        raise TypeError(f"segment_attention: 'graph' must be a SegmentGraph (got "
                        f"{type(graph).__name__})")
    if not graph.has_csc:
        raise ValueError("segment_attention: the kernels need the graph's CSC; build the "
                         "graph with the layout of the implementation that runs it "
                         "(gat_pyg.ops.graph_layout)")
    tensors = list(graph[:6])
    dtype = graph.ptr.dtype
    if dtype not in _INDEX_DTYPES:
        raise TypeError(f"segment_attention: graph indices must be int64 or int32 (got {dtype})")
    for name, t in zip(_GRAPH_TENSORS, tensors):
        if t.dtype != dtype:
            raise TypeError(f"segment_attention: graph index tensors must share one dtype; "
                            f"'{name}' is {t.dtype} but 'ptr' is {dtype}")
        if t.dim() != 1 or t.device != h.device:
            raise ValueError(f"segment_attention: graph '{name}' must be a 1-D tensor on "
                             f"{h.device} (got shape {tuple(t.shape)} on {t.device})")
        expected = {'ptr': graph.num_dst + 1,
                    'src_ptr': graph.num_src + 1}.get(name, graph.num_edges)
        if t.numel() != expected:
            raise ValueError(f"segment_attention: graph '{name}' has {t.numel()} entries, "
                             f"expected {expected}")
    if graph.num_src != h.size(0):
        raise ValueError(f"segment_attention: '{values}' has {h.size(0)} rows but the graph "
                         f"has {graph.num_src} sources")
    return [t.contiguous() for t in tensors]


def node_rows(t: Tensor) -> Tensor:
    """``t`` itself if each of its rows is contiguous (the kernels take any row stride, so a
    column block of a wider projection is read in place), else a contiguous copy."""
    expected = 1
    for size, stride in zip(reversed(t.shape[1:]), reversed(t.stride()[1:])):
        if size != 1 and stride != expected:
            return t.contiguous()
        expected *= size
    return t if t.stride(0) >= 0 else t.contiguous()


def _checked_seed(dropout: float, seed) -> Optional[Tensor]:
    if not 0.0 <= dropout <= 1.0:
        raise ValueError(f"segment_attention: dropout must be in [0, 1] (got {dropout})")
    if dropout == 0.0:
        return None
    if seed is None:
        raise ValueError("segment_attention: dropout > 0 needs a seed")
    if not isinstance(seed, Tensor):
        seed = torch.tensor(int(seed), dtype=torch.long)
    if seed.numel() != 1:
        raise ValueError("segment_attention: 'seed' must hold one value")
    return seed.reshape(()).to(device='cpu', dtype=torch.long)


def _check_values(name: str, t: Tensor) -> None:
    if not isinstance(t, Tensor) or t.dim() != 3:
        raise ValueError(f"segment_attention: '{name}' must be a [num_src, heads, channels] "
                         f"tensor (got shape {tuple(getattr(t, 'shape', ()))})")
    if t.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"segment_attention: the kernels support float32, float64 and "
                        f"bfloat16 (got {t.dtype})")


def segment_attention_op(graph: SegmentGraph, h: Tensor, a_src: Tensor,
                         a_dst: Optional[Tensor], a_edge: Optional[Tensor],
                         negative_slope: float, dropout: float = 0.0,
                         seed: Optional[Tensor] = None,
                         return_alpha: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
    """Segment attention through the operator, on whatever kernel is registered for
    ``h``'s device; arguments and result as :func:`gat_pyg.ops.reference.segment_attention`.
    The inputs are checked here, before any kernel touches memory (and again at each
    kernel's own entry)."""
    _check_values('h', h)
    num_src, heads, _ = h.shape
    index = _check_graph(graph, h)
    _check_float('a_src', a_src, h, (num_src, heads))
    _check_float('a_dst', a_dst, h, (graph.num_dst, heads))
    _check_float('a_edge', a_edge, h, (graph.num_edges, heads))
    dropout = float(dropout)
    seed = _checked_seed(dropout, seed)
    # The gradient of a_dst needs two extra forward results (see the backward formulas).
    save_for_a_dst = (a_dst is not None and a_dst.requires_grad
                      and torch.is_grad_enabled())
    out, _, alpha, _, _ = torch.ops.gat_pyg.segment_attention_fwd(
        *index, node_rows(h), node_rows(a_src), None if a_dst is None else node_rows(a_dst),
        None if a_edge is None else a_edge.contiguous(),
        float(negative_slope), dropout, seed, bool(return_alpha), save_for_a_dst)
    return out, (alpha if return_alpha else None)


def segment_attention_v2_op(graph: SegmentGraph, x_l: Tensor, x_r: Tensor, att: Tensor,
                            edge_attr: Optional[Tensor], w_edge: Optional[Tensor],
                            negative_slope: float, dropout: float = 0.0,
                            seed: Optional[Tensor] = None,
                            return_alpha: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
    """Vector-score segment attention through the operator, on whatever kernel is registered
    for ``x_l``'s device; arguments and result as
    :func:`gat_pyg.ops.reference.segment_attention_v2`. The inputs are checked here, before
    any kernel touches memory."""
    _check_values('x_l', x_l)
    _, heads, channels = x_l.shape
    index = _check_graph(graph, x_l, 'x_l')
    _check_float('x_r', x_r, x_l, (graph.num_dst, heads, channels), 'x_l')
    _check_float('att', att, x_l, (heads, channels), 'x_l')
    if edge_attr is not None:
        width = edge_attr.size(-1) if isinstance(edge_attr, Tensor) and edge_attr.dim() == 2 \
            else -1
        _check_float('edge_attr', edge_attr, x_l, (graph.num_edges, max(width, 0)), 'x_l')
        if w_edge is None and width != heads * channels:
            raise ValueError(f"segment_attention: without 'w_edge', 'edge_attr' is the edge "
                             f"term and must have heads * channels = {heads * channels} "
                             f"columns (got {width})")
        _check_float('w_edge', w_edge, x_l, (heads * channels, width), 'x_l')
    elif w_edge is not None:
        raise ValueError("segment_attention: 'w_edge' was given without 'edge_attr'")
    seed = _checked_seed(float(dropout), seed)
    out, _, alpha = torch.ops.gat_pyg.segment_attention_v2_fwd(
        *index, node_rows(x_l), node_rows(x_r), att.contiguous(),
        None if edge_attr is None else edge_attr.contiguous(),
        None if w_edge is None else w_edge.contiguous(), float(negative_slope),
        float(dropout), seed, bool(return_alpha))
    return out, (alpha if return_alpha else None)
