"""Fused CPU segment attention: a C++/OpenMP kernel with the semantics of
:func:`gat_pyg.ops.reference.segment_attention`.

The kernels live in ``csrc/`` and are compiled just in time with
:func:`torch.utils.cpp_extension.load` the first time they are needed, into
``$GAT_PYG_BUILD_DIR`` (default ``~/.cache/gat_pyg/<torch version>``), and reused from there
(ninja rebuilds only what changed). They are registered as the operators
``torch.ops.gat_pyg.segment_attention_fwd`` and ``torch.ops.gat_pyg.segment_attention_bwd``;
this module adds their fake kernels (:func:`torch.library.register_fake`) and the autograd
formula connecting them (:func:`torch.library.register_autograd`), so that
``torch.compile(fullgraph=True)`` traces through them and :func:`torch.library.opcheck`
passes.

Design:

- Forward visits each target's incoming edges (CSR) once: scores in a per-thread scratch of
  ``deg x H`` scalars, PyG's softmax arithmetic (max, ``exp(s - max)``, ``sum + 1e-16``),
  then the weighted sum of ``h``. It saves for backward only the per-(target, head) maximum
  and denominator (``2 x N_dst x H`` in the accumulation dtype; the output is not saved).
- Backward recomputes the attention from those statistics: a pass over targets (CSR) gives
  ``grad a_dst``, ``grad a_edge`` (per edge, caller order) and ``D_i = sum_k alpha_k
  dL/dalpha_k``; a pass over sources (CSC) gives ``grad h`` and ``grad a_src``. No atomics:
  every output row is reduced by one thread in a fixed order, so results are bitwise
  identical across runs and thread counts. No tensor of size ``E x C`` exists.
- Attention dropout evaluates the hash of :func:`gat_pyg.ops.reference.dropout_hash`
  (``csrc/dropout_hash.h``) per (edge, head) in forward and backward instead of storing a
  mask, so both implementations drop the same entries.
- float32, float64 and bfloat16 (accumulated in float32); int64 or int32 graph indices.
"""
import os
import threading
import warnings
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from gat_pyg.ops.graph import SegmentGraph

__all__ = ['segment_attention_fused', 'load_library', 'is_available', 'build_directory']

_CSRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'csrc')
_SOURCES = ('segment_attention_forward.cpp', 'segment_attention_backward.cpp',
            'registration.cpp')
_EXTENSION_NAME = 'gat_pyg_ops'
_FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16)
_INDEX_DTYPES = (torch.int64, torch.int32)

_lock = threading.Lock()
_loaded = False
_load_error: Optional[BaseException] = None


def build_directory() -> str:
    """Where the extension is built: ``$GAT_PYG_BUILD_DIR`` or
    ``~/.cache/gat_pyg/<torch version>``."""
    path = os.environ.get('GAT_PYG_BUILD_DIR')
    if not path:
        version = torch.__version__.replace('+', '_')
        path = os.path.join(os.path.expanduser('~'), '.cache', 'gat_pyg', version)
    return path


def load_library(verbose: bool = False) -> None:
    """Builds (once per build directory) and loads the C++ operators.

    Raises the build or load error (a :class:`RuntimeError` or :class:`OSError`, for
    example when no C++ compiler is installed); a failure is remembered, so later calls raise
    it again without retrying.
    """
    global _loaded, _load_error
    if _loaded:
        return
    with _lock:
        if _loaded:
            return
        if _load_error is not None:
            raise _load_error
        try:
            from torch.utils.cpp_extension import load
            directory = build_directory()
            os.makedirs(directory, exist_ok=True)
            load(
                name=_EXTENSION_NAME,
                sources=[os.path.join(_CSRC, name) for name in _SOURCES],
                extra_cflags=['-O3', '-fopenmp'],
                extra_ldflags=['-fopenmp'],
                build_directory=directory,
                is_python_module=False,
                verbose=verbose,
            )
            _register_python_parts()
        except BaseException as error:  # noqa: B036 (remember and re-raise anything)
            _load_error = error
            raise
        _loaded = True


@torch.compiler.assume_constant_result
def is_available() -> bool:
    """Whether the fused operators are (or can be) built and loaded. Builds them on the
    first call; never raises."""
    try:
        load_library()
    except Exception:
        return False
    return True


def load_error() -> Optional[BaseException]:
    """The error of a failed build or load, or ``None``."""
    return _load_error


@torch.compiler.assume_constant_result
def _ensure_loaded() -> bool:
    load_library()
    return True


# Fake kernels and autograd #####################################################################

def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype == torch.bfloat16 else dtype


def _fake_forward(ptr, src, perm, src_ptr, csc_dst, csc_slot, h, a_src, a_dst, a_edge,
                  negative_slope, dropout, seed, return_alpha):
    torch._check(h.dim() == 3, lambda: "segment_attention: 'h' must be 3-D")
    num_dst = ptr.shape[0] - 1
    heads, channels = h.shape[1], h.shape[2]
    acc = _acc_dtype(h.dtype)
    out = h.new_empty((num_dst, heads, channels))
    row_max = h.new_empty((num_dst, heads), dtype=acc)
    denom = h.new_empty((num_dst, heads), dtype=acc)
    alpha = h.new_empty((src.shape[0] if return_alpha else 0, heads))
    return out, row_max, denom, alpha


def _fake_backward(grad_out, grad_alpha, ptr, src, perm, src_ptr, csc_dst, csc_slot, h, a_src,
                   a_dst, a_edge, row_max, denom, negative_slope, dropout, seed, output_mask):
    def grad(flag, like):
        return like.new_empty(like.shape) if flag and like is not None else h.new_empty((0,))
    return (grad(output_mask[0], h), grad(output_mask[1], a_src),
            grad(output_mask[2], a_dst), grad(output_mask[3], a_edge))


def _setup_context(ctx, inputs, output):
    (ptr, src, perm, src_ptr, csc_dst, csc_slot, h, a_src, a_dst, a_edge, negative_slope,
     dropout, seed, return_alpha) = inputs
    _, row_max, denom, _ = output
    ctx.save_for_backward(ptr, src, perm, src_ptr, csc_dst, csc_slot, h, a_src, a_dst, a_edge,
                          row_max, denom, seed)
    ctx.negative_slope = negative_slope
    ctx.dropout = dropout
    ctx.return_alpha = return_alpha
    ctx.mark_non_differentiable(row_max, denom)


def _backward(ctx, grad_out, grad_max, grad_denom, grad_alpha):
    (ptr, src, perm, src_ptr, csc_dst, csc_slot, h, a_src, a_dst, a_edge, row_max, denom,
     seed) = ctx.saved_tensors
    needs = ctx.needs_input_grad
    mask = [bool(needs[6]), bool(needs[7]), bool(needs[8]) and a_dst is not None,
            bool(needs[9]) and a_edge is not None]
    if grad_out is None:
        grad_out = h.new_zeros((ptr.shape[0] - 1,) + tuple(h.shape[1:]))
    if not ctx.return_alpha:
        grad_alpha = None
    elif grad_alpha is not None:
        grad_alpha = grad_alpha.contiguous()
    grad_h, grad_a_src, grad_a_dst, grad_a_edge = torch.ops.gat_pyg.segment_attention_bwd(
        grad_out.contiguous(), grad_alpha, ptr, src, perm, src_ptr, csc_dst, csc_slot, h,
        a_src, a_dst, a_edge, row_max, denom, ctx.negative_slope, ctx.dropout, seed, mask)
    return (None, None, None, None, None, None,
            grad_h if mask[0] else None, grad_a_src if mask[1] else None,
            grad_a_dst if mask[2] else None, grad_a_edge if mask[3] else None,
            None, None, None, None)


def _register_python_parts() -> None:
    torch.library.register_fake('gat_pyg::segment_attention_fwd', _fake_forward)
    torch.library.register_fake('gat_pyg::segment_attention_bwd', _fake_backward)
    torch.library.register_autograd('gat_pyg::segment_attention_fwd', _backward,
                                    setup_context=_setup_context)


# The operator ###################################################################################

def _check_float(name: str, t: Optional[Tensor], dtype: torch.dtype,
                 shape: Tuple[int, ...]) -> None:
    if t is None:
        return
    if not isinstance(t, Tensor):
        raise TypeError(f"segment_attention: '{name}' must be a tensor (got "
                        f"{type(t).__name__})")
    if t.dtype != dtype:
        raise TypeError(f"segment_attention: '{name}' has dtype {t.dtype} but 'h' has {dtype}; "
                        f"all float inputs must share one dtype")
    if t.device.type != 'cpu':
        raise ValueError(f"segment_attention: the fused kernel needs CPU tensors ('{name}' is "
                         f"on {t.device})")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"segment_attention: '{name}' must have shape {tuple(shape)} (got "
                         f"{tuple(t.shape)})")


def _check_graph(graph: SegmentGraph, num_src: int) -> List[Tensor]:
    if not isinstance(graph, SegmentGraph):
        raise TypeError(f"segment_attention: 'graph' must be a SegmentGraph (got "
                        f"{type(graph).__name__})")
    names = ('ptr', 'src', 'perm', 'src_ptr', 'csc_dst', 'csc_slot')
    tensors = [getattr(graph, name) for name in names]
    dtype = graph.ptr.dtype
    if dtype not in _INDEX_DTYPES:
        raise TypeError(f"segment_attention: graph indices must be int64 or int32 (got {dtype})")
    num_edges = graph.src.numel()
    for name, t in zip(names, tensors):
        if t.dtype != dtype:
            raise TypeError(f"segment_attention: graph index tensors must share one dtype; "
                            f"'{name}' is {t.dtype} but 'ptr' is {dtype}")
        if t.dim() != 1 or t.device.type != 'cpu':
            raise ValueError(f"segment_attention: graph '{name}' must be a 1-D CPU tensor "
                             f"(got shape {tuple(t.shape)} on {t.device})")
        expected = {'ptr': graph.num_dst + 1, 'src_ptr': graph.num_src + 1}.get(name, num_edges)
        if t.numel() != expected:
            raise ValueError(f"segment_attention: graph '{name}' has {t.numel()} entries, "
                             f"expected {expected}")
    if graph.num_src != num_src:
        raise ValueError(f"segment_attention: 'h' has {num_src} rows but the graph has "
                         f"{graph.num_src} sources")
    return [t.contiguous() for t in tensors]


def segment_attention_fused(graph: SegmentGraph, h: Tensor, a_src: Tensor,
                            a_dst: Optional[Tensor], a_edge: Optional[Tensor],
                            negative_slope: float, dropout: float = 0.0,
                            seed: Optional[Tensor] = None,
                            return_alpha: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
    """Fused segment attention; arguments and result as
    :func:`gat_pyg.ops.reference.segment_attention` (CPU tensors only)."""
    _ensure_loaded()
    if not isinstance(h, Tensor) or h.dim() != 3:
        raise ValueError(f"segment_attention: 'h' must be a [num_src, heads, channels] tensor "
                         f"(got shape {tuple(getattr(h, 'shape', ()))})")
    if h.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"segment_attention: the fused kernel supports float32, float64 and "
                        f"bfloat16 (got {h.dtype})")
    num_src, heads, _ = h.shape
    index = _check_graph(graph, num_src)
    _check_float('h', h, h.dtype, tuple(h.shape))
    _check_float('a_src', a_src, h.dtype, (num_src, heads))
    _check_float('a_dst', a_dst, h.dtype, (graph.num_dst, heads))
    _check_float('a_edge', a_edge, h.dtype, (graph.num_edges, heads))
    dropout = float(dropout)
    if not 0.0 <= dropout <= 1.0:
        raise ValueError(f"segment_attention: dropout must be in [0, 1] (got {dropout})")
    if dropout > 0.0:
        if seed is None:
            raise ValueError("segment_attention: dropout > 0 needs a seed")
        if not isinstance(seed, Tensor):
            seed = torch.tensor(int(seed), dtype=torch.long)
        if seed.numel() != 1:
            raise ValueError("segment_attention: 'seed' must hold one value")
        seed = seed.reshape(()).to(device='cpu', dtype=torch.long)
    else:
        seed = None
    out, _, _, alpha = torch.ops.gat_pyg.segment_attention_fwd(
        *index, h.contiguous(), a_src.contiguous(),
        None if a_dst is None else a_dst.contiguous(),
        None if a_edge is None else a_edge.contiguous(),
        float(negative_slope), dropout, seed, bool(return_alpha))
    return out, (alpha if return_alpha else None)
