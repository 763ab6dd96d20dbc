"""A pytest plug-in that adds a kernel the way ``docs/architecture.md`` says to ("Adding a
kernel for a device"), so that a test can check that the recipe is true: a pure-PyTorch
implementation of the operators of both score families, registered for the ``cpu``
device type in place of the C++ kernel.

``python -m pytest -p python_kernel tests/...`` runs the given tests with it: the
implementation list of ``tests/implementations.py`` then holds it as the CPU kernel, and
every test parametrized over the kernels runs on it. It runs with ``int64`` graphs only,
as its layout asks, and computes what the operators' schemas in ``gat_pyg/ops/_library.py``
document; its backward differentiates the reference instead of evaluating the formulas.
"""
import torch
import torch.nn.functional as F
from torch_geometric.utils import segment

from gat_pyg import ops
from gat_pyg.ops import _library, reference
from gat_pyg.ops.graph import GraphLayout, SegmentGraph


def _scores(ptr, src, perm, a_src, a_dst, a_edge, num_src):
    """The graph (int64) and each CSR slot's target and raw score (before the LeakyReLU)."""
    graph = SegmentGraph(ptr, src, perm, None, None, None, num_src, ptr.numel() - 1)
    dst = graph.dst()
    raw = a_src.index_select(0, src)
    if a_dst is not None:
        raw = raw + a_dst.index_select(0, dst)
    if a_edge is not None:
        raw = raw + a_edge.index_select(0, perm)
    return graph, dst, raw


def _leaky_relu_slope(raw, negative_slope):
    return torch.full_like(raw, negative_slope).masked_fill_(raw > 0, 1.0)


def _lse(score, ptr, dst, num_dst):
    """max + log(sum exp(score - max) + 1e-16) per target and head (0 without edges)."""
    top = (segment(score, ptr, reduce='max') if score.numel() else
           score.new_zeros(num_dst, score.size(1)))
    shifted = (score - top.index_select(0, dst)).exp()
    lse = top + (segment(shifted, ptr, reduce='sum') + 1e-16).log()
    return torch.where((ptr[1:] > ptr[:-1]).unsqueeze(-1), lse, 0.0)


def forward(ptr, src, perm, src_ptr, csc_dst, csc_slot, h, a_src, a_dst, a_edge,
            negative_slope, dropout, seed, return_alpha, save_for_a_dst):
    graph, dst, raw = _scores(ptr, src, perm, a_src, a_dst, a_edge, h.size(0))
    out, alpha = reference.segment_attention(graph, h, a_src, a_dst, a_edge, negative_slope,
                                             dropout, seed, return_alpha=True)
    score = F.leaky_relu(raw, negative_slope)
    lse = _lse(score, ptr, dst, graph.num_dst)
    rows = graph.num_dst if save_for_a_dst and a_dst is not None else 0
    slope = _leaky_relu_slope(raw, negative_slope)
    kept = alpha.index_select(0, perm)  # CSR order, dropped out
    out_slope = segment((slope * kept).unsqueeze(-1) * h.index_select(0, src), ptr)[:rows]
    weights = (score - lse.index_select(0, dst)).exp()
    slope_sum = segment(slope * weights, ptr)[:rows]
    return (out, lse, alpha if return_alpha else h.new_empty(0, h.size(1)), out_slope,
            slope_sum)


def backward(grad_out, grad_alpha, ptr, src, perm, src_ptr, csc_dst, csc_slot, h, a_src,
             a_dst, a_edge, out, lse, out_slope, slope_sum, negative_slope, dropout, seed,
             output_mask):
    # The formulas of docs/architecture.md, per edge (this kernel keeps E x H x C tensors),
    # in float64, as the C++ kernel forms the score gradients (they cancel).
    # The scores as the forward pass formed them (in the inputs' dtype), then float64.
    dtype = h.dtype
    graph, dst, raw = _scores(ptr, src, perm, a_src, a_dst, a_edge, h.size(0))
    score = F.leaky_relu(raw, negative_slope).double()
    h, a_src, grad_out, lse, raw = (t.double() for t in (h, a_src, grad_out, lse, raw))
    a_dst, a_edge, grad_alpha = (None if t is None else t.double()
                                 for t in (a_dst, a_edge, grad_alpha))
    alpha = (score - lse.index_select(0, dst)).exp()
    factor = reference.apply_dropout(torch.ones_like(alpha), dropout, seed, perm)
    g = grad_out.index_select(0, dst)
    d_alpha = factor * (g * h.index_select(0, src)).sum(-1)
    if grad_alpha is not None:
        d_alpha = d_alpha + factor * grad_alpha.index_select(0, perm)
    # D_i = sum_k alpha_k dL/dalpha_k = g_i . out_i (+ the attention's own gradient term).
    total = (grad_out * out.double()).sum(-1)
    if grad_alpha is not None:
        total = total + segment(factor * alpha * grad_alpha.index_select(0, perm), ptr)
    d_score = _leaky_relu_slope(raw, negative_slope) * alpha * (
        d_alpha - total.index_select(0, dst))
    grads = [torch.zeros_like(h).index_add_(0, src, (factor * alpha).unsqueeze(-1) * g),
             torch.zeros_like(a_src).index_add_(0, src, d_score),
             segment(d_score, ptr),
             torch.empty_like(d_score).index_copy_(0, perm, d_score)]
    return tuple(grad.to(dtype) if flag and like is not None else h.new_empty(0, dtype=dtype)
                 for grad, flag, like in zip(grads, output_mask, (h, a_src, a_dst, a_edge)))


def _v2_terms(ptr, src, perm, x_l, x_r, att, edge_attr, w_edge, negative_slope):
    """The graph, each CSR slot's target, z = x_r[i] + x_l[j] (+ edge term) and score."""
    graph = SegmentGraph(ptr, src, perm, None, None, None, x_l.size(0), ptr.numel() - 1)
    dst = graph.dst()
    x_j, x_i = x_l.index_select(0, src), x_r.index_select(0, dst)
    z = x_i + x_j
    if edge_attr is not None:
        term = edge_attr if w_edge is None else edge_attr @ w_edge.t()
        z = z + term.view(-1, *x_l.shape[1:]).index_select(0, perm)
    score = (F.leaky_relu(z, negative_slope) * att).sum(-1)
    return graph, dst, z, score


def forward_v2(ptr, src, perm, src_ptr, csc_dst, csc_slot, x_l, x_r, att, edge_attr, w_edge,
               negative_slope, dropout, seed, return_alpha):
    graph, dst, _, score = _v2_terms(ptr, src, perm, x_l, x_r, att, edge_attr, w_edge,
                                     negative_slope)
    out, alpha = reference.segment_attention_v2(graph, x_l, x_r, att, edge_attr, w_edge,
                                                negative_slope, dropout, seed,
                                                return_alpha=True)
    lse = _lse(score.double(), ptr, dst, graph.num_dst)
    return out, lse, alpha if return_alpha else x_l.new_empty(0, x_l.size(1))


def backward_v2(grad_out, grad_alpha, ptr, src, perm, src_ptr, csc_dst, csc_slot, x_l, x_r,
                att, edge_attr, w_edge, out, lse, negative_slope, dropout, seed, output_mask):
    # The formulas of docs/architecture.md per edge, in float64 from the scores as the
    # forward pass formed them.
    dtype = x_l.dtype
    graph, dst, z, score = _v2_terms(ptr, src, perm, x_l, x_r, att, edge_attr, w_edge,
                                     negative_slope)
    z, score, x_l, att, grad_out, lse = (t.double() for t in (z, score, x_l, att, grad_out,
                                                                lse))
    alpha = (score - lse.index_select(0, dst)).exp()
    factor = reference.apply_dropout(torch.ones_like(alpha), dropout, seed, perm)
    g = grad_out.index_select(0, dst)
    dot = (g * x_l.index_select(0, src)).sum(-1)
    if grad_alpha is not None:
        dot = dot + grad_alpha.double().index_select(0, perm)
    d_alpha = factor * dot
    total = segment(alpha * d_alpha, ptr)
    d_score = alpha * (d_alpha - total.index_select(0, dst))
    d_z = d_score.unsqueeze(-1) * att * _leaky_relu_slope(z, negative_slope)
    d_term = torch.empty_like(d_z).index_copy_(0, perm, d_z).flatten(1)  # caller order
    grads = [torch.zeros_like(x_l).index_add_(0, src, (factor * alpha).unsqueeze(-1) * g + d_z),
             segment(d_z, ptr),
             (d_score.unsqueeze(-1) * F.leaky_relu(z, negative_slope)).sum(0),
             None, None]
    if edge_attr is not None:
        grads[3] = d_term if w_edge is None else d_term @ w_edge.double()
        grads[4] = None if w_edge is None else d_term.t() @ edge_attr.double()
    return tuple(grad.to(dtype) if flag and grad is not None else x_l.new_empty(0, dtype=dtype)
                 for grad, flag in zip(grads, output_mask))


def load() -> None:
    for name, function in zip(_library.OPERATORS, (forward, backward, forward_v2,
                                                    backward_v2)):
        torch.library.register_kernel(name, 'cpu', function)


KERNEL = ops.Kernel('python (test)', 'cpu', load,
                    GraphLayout(index_dtypes=(torch.int64, ), csc=True))
ops.register_kernel(KERNEL)
