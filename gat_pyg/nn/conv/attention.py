"""Stages that the attention layers share besides their edge handling (:mod:`.edges`):
checking the node features, projecting one input twice, choosing between the operator and
PyG's ``propagate``, the attention-dropout seed, and the finish of the output (heads,
residual, bias)."""
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.dense.linear import Linear

__all__ = ['check_node_features', 'linear_pair', 'runs_propagate', 'dropout_seed',
           'finish_heads', 'projects_itself']


def projects_itself(lin: torch.nn.Module) -> bool:
    """Whether ``lin`` has a forward of its own rather than :class:`Linear`'s, so that its
    weight cannot stand for it (in a folded score product, or inside an operator)."""
    return type(lin).forward is not Linear.forward


def check_node_features(layer: str, in_channels: Union[int, Tuple[int, int]], x_src: Tensor,
                        x_dst: Optional[Tensor]) -> None:
    """Raises a clear error for node features that are not 2-D floating-point tensors of
    the layer's widths (``-1``: any width, as for lazy layers)."""
    in_src, in_dst = ((in_channels, in_channels) if isinstance(in_channels, int)
                      else in_channels)
    for name, feat, expected in (('x_src', x_src, in_src), ('x_dst', x_dst, in_dst)):
        if feat is None:
            continue
        if not isinstance(feat, Tensor) or feat.dim() != 2:
            raise ValueError(f"{layer} expects '{name}' to be a 2-D tensor [num_nodes, "
                             f"channels] (got shape {tuple(getattr(feat, 'shape', ()))})")
        if not feat.is_floating_point():
            raise TypeError(f"{layer} expects floating-point '{name}' (got {feat.dtype})")
        if expected != -1 and feat.size(1) != expected:
            raise ValueError(f"{layer} was built for {expected} channels in '{name}' but "
                             f"got {feat.size(1)}")


class _LinearPair(torch.autograd.Function):
    """``(F.linear(x, w_a, b_a), F.linear(x, w_b, b_b))``, with a backward that forms the
    gradient of ``x`` as one product plus one product added in place (autograd would make
    two products and add them into a third tensor)."""

    @staticmethod
    def forward(x: Tensor, w_a: Tensor, b_a: Optional[Tensor], w_b: Tensor,
                b_b: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        return F.linear(x, w_a, b_a), F.linear(x, w_b, b_b)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, w_a, _, w_b, _ = inputs
        ctx.save_for_backward(x, w_a, w_b)

    @staticmethod
    def backward(ctx, g_a: Tensor, g_b: Tensor):
        x, w_a, w_b = ctx.saved_tensors
        need_x, need_wa, need_ba, need_wb, need_bb = ctx.needs_input_grad
        grad_x = torch.mm(g_a, w_a).addmm_(g_b, w_b) if need_x else None
        return (grad_x, g_a.t().mm(x) if need_wa else None, g_a.sum(0) if need_ba else None,
                g_b.t().mm(x) if need_wb else None, g_b.sum(0) if need_bb else None)


def linear_pair(x: Tensor, lin_a: Linear, lin_b: Linear) -> Tuple[Tensor, Tensor]:
    """``(lin_a(x), lin_b(x))`` for two plain :class:`Linear` s of the same 2-D input."""
    return _LinearPair.apply(x, lin_a.weight, lin_a.bias, lin_b.weight, lin_b.bias)


def runs_propagate(layer: MessagePassing) -> bool:
    """Whether the layer must run PyG's ``propagate`` (explain mode, decomposed layers, or
    message-passing hooks), so that explainers and hooks see the per-edge messages."""
    if layer._explain or layer.decomposed_layers > 1:
        return True
    return any(len(hooks) > 0 for hooks in (
        layer._propagate_forward_pre_hooks, layer._propagate_forward_hooks,
        layer._message_forward_pre_hooks, layer._message_forward_hooks,
        layer._aggregate_forward_pre_hooks, layer._aggregate_forward_hooks,
        layer._edge_update_forward_pre_hooks, layer._edge_update_forward_hooks))


def dropout_seed(training: bool, p: float) -> Optional[Tensor]:
    """The seed of the attention-dropout hash for one call (drawn from torch's RNG, so that
    :func:`torch.manual_seed` makes training reproducible), or ``None`` without dropout."""
    if not training or p <= 0.0:
        return None
    return torch.randint(0, 2**62, (), dtype=torch.long)


def finish_heads(out: Tensor, concat: bool, res: Optional[Tensor],
                 bias: Optional[Tensor]) -> Tensor:
    """``out [N, H, C]`` with its heads concatenated (``[N, H * C]``) or averaged
    (``[N, C]``), plus the residual and the bias where the layer has them."""
    out = out.flatten(1) if concat else out.mean(dim=1)
    if res is not None:
        out = out + res
    if bias is not None:
        out = out + bias
    return out
