r"""Input dropout of the GAT models: cheap for bag-of-words inputs, and optionally with one
mask per attention head, as in the GAT paper's reference implementation.

The reference code (TensorFlow, ``utils/layers.py``) builds each head separately, and each
head drops its own copy of the layer input before projecting it,

.. math::
    \mathbf{W}_k \, \mathrm{dropout}_k(\mathbf{x}_i), \qquad k = 1, \ldots, K,

with :math:`K` independent masks, where PyG's example (and a plain ``F.dropout`` before
the layer) drops the input once and projects the same dropped input for every head.
:class:`HeadwiseDropoutLinear` is a :class:`torch_geometric.nn.Linear` that does the former
in training mode; it takes the place of a ``GATConv``'s ``lin`` (ours or PyG's), so that
the parameters keep their names.
"""
import warnings
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn.dense.linear import Linear

__all__ = ['input_dropout', 'headwise_dropout_linear', 'HeadwiseDropoutLinear']


def _is_mostly_zero(x: Tensor) -> bool:
    # Counting first: the indices of a dense input would cost 16 bytes per entry.
    return int(torch.count_nonzero(x)) <= x.numel() // 4


def _dropped_nonzeros(x: Tensor, p: float, copies: int) -> Tuple[Tuple[Tensor, ...], Tensor]:
    """The indices of the nonzero entries of ``x`` and ``copies`` independently dropped and
    rescaled copies of their values, ``[copies, nnz]``: dropping a zero changes nothing, so
    random numbers are drawn for the nonzero entries only."""
    nonzero = x.nonzero(as_tuple=True)
    keep = torch.rand(copies, nonzero[0].numel(), dtype=x.dtype, device=x.device) >= p
    return nonzero, x[nonzero] * keep / (1.0 - p)


def input_dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """:func:`torch.nn.functional.dropout` for mostly-zero inputs (bag-of-words features):
    random numbers are drawn only for the nonzero entries. Same distribution and
    ``1 / (1 - p)`` scaling as ``F.dropout``, at a fraction of the cost of torch's CPU
    random generator (Cora: 7 ms instead of 56 ms); inputs with more than a quarter of
    their entries nonzero go to ``F.dropout``."""
    if not training or p == 0.0:
        return x
    if p >= 1.0 or not _is_mostly_zero(x):
        return F.dropout(x, p, training)
    nonzero, values = _dropped_nonzeros(x, p, 1)
    return torch.zeros_like(x).index_put_(nonzero, values[0])


def _check_heads(out_channels: int, heads: int, p: float) -> None:
    if heads < 1 or out_channels % heads != 0:
        raise ValueError(f"{out_channels} output channels (weight rows) do not split into "
                         f"{heads} heads")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"Dropout probability must be in [0, 1] (got {p})")


def _csr(crow: Tensor, col: Tensor, values: Tensor, size: Tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():
        # torch says once per process that CSR tensors are in beta; the product is stable.
        warnings.filterwarnings('ignore', message='Sparse CSR tensor support is in beta')
        return torch.sparse_csr_tensor(crow, col, values, size, check_invariants=False)


class _SparseHeadwiseProjection(torch.autograd.Function):
    """``[N, F]`` sparse inputs, one set of values per head, times each head's weight
    ``[C, F]``: ``out[:, kC:(k+1)C] = S_k W_k^T``. The weight gradient needs the transposed
    pattern; it is built once, from the order that sorts the entries by column (torch's
    own sparse backward transposes and sorts each head's matrix: on PubMed, 8 heads, a
    forward and backward take 858 ms that way and 457 ms this way, one core)."""

    @staticmethod
    def forward(ctx, weight: Tensor, rows: Tensor, cols: Tensor, values: Tensor,
                num_nodes: int) -> Tensor:
        heads, num_features = values.size(0), weight.size(1)
        w = weight.view(heads, -1, num_features)
        crow = torch.cat([rows.new_zeros(1),
                          torch.bincount(rows, minlength=num_nodes).cumsum(0)])
        out = [_csr(crow, cols, values[k], (num_nodes, num_features)) @ w[k].t()
               for k in range(heads)]
        ctx.save_for_backward(rows, cols, values)
        ctx.sizes = (num_nodes, num_features)
        return torch.cat(out, dim=1)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        rows, cols, values = ctx.saved_tensors
        num_nodes, num_features = ctx.sizes
        heads = values.size(0)
        order = torch.sort(cols, stable=True).indices
        ccol = torch.cat([cols.new_zeros(1),
                          torch.bincount(cols, minlength=num_features).cumsum(0)])
        g = grad_out.view(num_nodes, heads, -1)
        grad = [(_csr(ccol, rows[order], values[k][order], (num_features, num_nodes))
                 @ g[:, k]).t() for k in range(heads)]
        return torch.cat(grad, dim=0), None, None, None, None


def headwise_dropout_linear(x: Tensor, weight: Tensor, heads: int, p: float,
                            training: bool = True) -> Tensor:
    r"""``F.linear(x, weight)`` for a weight of ``heads`` stacked blocks
    :math:`\mathbf{W}_k \in \mathbb{R}^{C \times F}` (the layout of a ``GATConv``'s
    ``lin.weight``), where in training each block sees the input dropped with its own mask:
    output columns :math:`kC \ldots (k+1)C - 1` are
    :math:`\mathrm{dropout}_k(\mathbf{X}) \mathbf{W}_k^{\top}`.

    A mostly-zero input that needs no gradient (bag-of-words features) draws random numbers
    for its nonzero entries only and is multiplied as a sparse matrix (PubMed, 8 heads:
    1.6x the time of ``F.linear(F.dropout(x))``, forward and backward); other inputs draw
    ``heads`` dense masks.

    Args:
        x (torch.Tensor): Input :math:`(N, F)`.
        weight (torch.Tensor): Weight :math:`(KC, F)`.
        heads (int): The number of blocks :math:`K`.
        p (float): Dropout probability.
        training (bool, optional): Apply dropout; if :obj:`False`, this is
            ``F.linear(x, weight)``. (default: :obj:`True`)

    Returns:
        torch.Tensor: :math:`(N, KC)`.
    """
    if x.dim() != 2 or weight.dim() != 2 or x.size(1) != weight.size(1):
        raise ValueError(f"headwise_dropout_linear expects x [N, F] and weight [K*C, F] "
                         f"(got {tuple(x.shape)} and {tuple(weight.shape)})")
    if not x.is_floating_point() or x.dtype != weight.dtype:
        raise TypeError(f"headwise_dropout_linear expects x and weight of one floating "
                        f"dtype (got {x.dtype} and {weight.dtype})")
    _check_heads(weight.size(0), heads, p)
    if not training or p == 0.0:
        return F.linear(x, weight)
    if p == 1.0:
        return F.linear(torch.zeros_like(x), weight)
    if not x.requires_grad and x.layout == torch.strided and _is_mostly_zero(x):
        (rows, cols), values = _dropped_nonzeros(x, p, heads)
        return _SparseHeadwiseProjection.apply(weight, rows, cols, values, x.size(0))
    keep = torch.rand(heads, *x.shape, dtype=x.dtype, device=x.device) >= p
    w = weight.view(heads, -1, x.size(1))
    out = torch.bmm(x.unsqueeze(0) * keep / (1.0 - p), w.transpose(1, 2))
    return out.transpose(0, 1).reshape(x.size(0), weight.size(0))


class HeadwiseDropoutLinear(Linear):
    r"""A :class:`torch_geometric.nn.Linear` whose output is :obj:`heads` blocks, each
    computed in training mode from its own dropout of the input
    (:func:`headwise_dropout_linear`); in eval mode, a plain linear map.

    :meth:`from_linear` turns a ``GATConv``'s ``lin`` into one, with the same parameters.

    Args:
        in_channels (int): Input size :math:`F`.
        out_channels (int): Output size :math:`KC`.
        heads (int): The number of blocks :math:`K`.
        p (float): Dropout probability.
        bias (bool, optional): Add a learned bias (not dropped). (default: :obj:`True`)
        **kwargs: :class:`torch_geometric.nn.Linear`'s initialiser arguments.
    """

    def __init__(self, in_channels: int, out_channels: int, heads: int, p: float,
                 bias: bool = True, **kwargs) -> None:
        _check_heads(out_channels, heads, p)
        super().__init__(in_channels, out_channels, bias=bias, **kwargs)
        self.heads = heads
        self.p = p

    @classmethod
    def from_linear(cls, lin: Linear, heads: int, p: float) -> 'HeadwiseDropoutLinear':
        """A :class:`HeadwiseDropoutLinear` with ``lin``'s sizes, initialisers and current
        parameters (drawing no random numbers, so that swapping it in does not change
        what a seed gives)."""
        with torch.random.fork_rng(devices=[]):
            new = cls(lin.in_channels, lin.out_channels, heads, p, bias=lin.bias is not None,
                      weight_initializer=lin.weight_initializer,
                      bias_initializer=lin.bias_initializer)
        new = new.to(device=lin.weight.device, dtype=lin.weight.dtype)
        new.load_state_dict(lin.state_dict())
        return new

    def forward(self, x: Tensor) -> Tensor:
        out = headwise_dropout_linear(x, self.weight, self.heads, self.p, self.training)
        return out if self.bias is None else out + self.bias

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, {self.out_channels}, '
                f'heads={self.heads}, p={self.p}, bias={self.bias is not None})')
