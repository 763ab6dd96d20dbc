"""Fused CPU segment attention: a C++/OpenMP kernel with the semantics of
:func:`gat_pyg.ops.reference.segment_attention`.

The kernels live in ``csrc/`` and are compiled just in time with
:func:`torch.utils.cpp_extension.load` the first time they are needed (about a minute), into
``<root>/<hash of the sources, flags and CPU>`` with ``<root>`` = ``$GAT_PYG_BUILD_DIR`` or
``~/.cache/gat_pyg/<torch version>``, and loaded from there by every later process. They are
registered as the operators ``torch.ops.gat_pyg.segment_attention_fwd`` and
``torch.ops.gat_pyg.segment_attention_bwd``; this module adds their fake kernels
(:func:`torch.library.register_fake`) and the autograd formula connecting them
(:func:`torch.library.register_autograd`), so that ``torch.compile(fullgraph=True)`` traces
through them and :func:`torch.library.opcheck` passes.

Design (details in the headers of ``csrc/segment_attention_forward.cpp`` and
``csrc/segment_attention_backward.cpp``):

- Forward visits each target's incoming edges (CSR) once: the scores go to a per-thread
  scratch of ``deg x H``, then PyG's softmax arithmetic (max, ``exp(s - max)``,
  ``sum + 1e-16``, division), then the weighted sum of the sources' ``h`` rows, which are
  prefetched a few edges ahead. Saved for backward: the output and, per (target, head), the
  log-sum-exp ``lse`` -- plus, only when ``a_dst`` needs a gradient, ``out_slope`` (the output
  re-weighted by the LeakyReLU derivative, ``N_dst x H x C``) and ``slope_sum`` (``N_dst x
  H``). Nothing of size ``E x C`` (or ``E x H``) is stored.
- Backward recomputes ``alpha = exp(score - lse)``. A pass over targets gives ``D_i = g_i .
  out_i`` (``sum_k alpha_k dL/dalpha_k``, in double) and ``grad a_dst_i = g_i . out_slope_i -
  D_i slope_sum_i``; a pass over sources (CSC) gives ``grad h`` and ``grad a_src`` (through
  ``h_j . sum_k f_k w_k g_i``: the per-edge work is one multiply-add per channel, no dot
  product, and no data-dependent branch) and, when wanted, ``grad a_edge`` per edge (caller
  order). No atomics: every output row is reduced by one thread in a fixed order, so results
  are bitwise identical across runs and thread counts.
- ``h``, ``a_src`` and ``a_dst`` may be column blocks of one wider tensor (any row stride,
  contiguous rows): :class:`~gat_pyg.nn.GATConv` passes the blocks of its single projection
  product without copying them.
- Attention dropout evaluates the hash of :func:`gat_pyg.ops.reference.dropout_hash`
  (``csrc/dropout_hash.h``) per (edge, head) in forward and backward instead of storing a
  mask, so both implementations drop exactly the same entries.
- float32 (``exp`` by a vectorised polynomial, within 1.4 ulp), float64 (libm ``exp``, so
  results agree with the reference to ~1e-15) and bfloat16 (accumulated in float32); int64
  or int32 graph indices. Indices are range-checked as the kernels read them: a bad graph
  raises :class:`IndexError`, never touches memory out of bounds.
"""
import hashlib
import os
import platform
import threading
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
# -march=native: the extension is built on (and for) the machine that runs it, so its gather
# and accumulate loops use the full vector width there (AVX2 / FMA on x86-64); the build
# directory is keyed on the CPU too (see _source_digest). -fno-trapping-math lets GCC
# vectorise the branch-free selects (no IEEE result changes, as in PyTorch's own build);
# -Wno-psabi silences notes about vector arguments of inlined helpers.
_CFLAGS = ['-O3', '-march=native', '-fopenmp', '-fno-trapping-math', '-fno-math-errno',
           '-Wno-psabi']

_lock = threading.Lock()
_loaded = False
_load_error: Optional[BaseException] = None


def _cpu_signature() -> str:
    """The CPU model and instruction-set flags (Linux), else what :mod:`platform` says: a
    ``-march=native`` build is only valid on CPUs with the same instruction sets."""
    try:
        with open('/proc/cpuinfo') as f:
            lines = [line for line in f if line.startswith(('model name', 'flags',
                                                             'Features', 'CPU part'))]
        return ''.join(sorted(set(lines)))
    except OSError:
        return f'{platform.machine()} {platform.processor()}'


def _source_digest() -> str:
    """A hash of the kernel sources, the build flags and the CPU: the build directory is keyed
    on it, so that checkouts with different kernel versions (or machines with different
    CPUs) sharing one cache never load (or ninja-"update") each other's builds."""
    digest = hashlib.sha256(' '.join(_CFLAGS).encode())
    digest.update(_cpu_signature().encode())
    for name in sorted(os.listdir(_CSRC)):
        if name.endswith(('.cpp', '.h')):
            digest.update(name.encode())
            with open(os.path.join(_CSRC, name), 'rb') as f:
                digest.update(f.read())
    return digest.hexdigest()[:16]


def build_directory() -> str:
    """Where the extension is built: ``<root>/<hash of the sources, flags and CPU>``, with
    ``<root>`` the environment variable ``GAT_PYG_BUILD_DIR`` or, by default,
    ``~/.cache/gat_pyg/<torch version>``."""
    root = os.environ.get('GAT_PYG_BUILD_DIR')
    if not root:
        version = torch.__version__.replace('+', '_')
        root = os.path.join(os.path.expanduser('~'), '.cache', 'gat_pyg', version)
    return os.path.join(root, _source_digest())


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
                extra_cflags=_CFLAGS,
                extra_ldflags=['-fopenmp'],
                build_directory=directory,
                is_python_module=False,
                verbose=verbose,
            )
            _register_python_parts()
        except Exception as error:  # remembered: no retry (an interrupt is not remembered)
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


def _fake_backward(grad_out, grad_alpha, ptr, src, perm, src_ptr, csc_dst, csc_slot, h, a_src,
                   a_dst, a_edge, out, lse, out_slope, slope_sum, negative_slope,
                   dropout, seed, output_mask):
    def grad(flag, like):
        return like.new_empty(like.shape) if flag and like is not None else h.new_empty((0,))
    return (grad(output_mask[0], h), grad(output_mask[1], a_src),
            grad(output_mask[2], a_dst), grad(output_mask[3], a_edge))


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


def _node_rows(t: Tensor) -> Tensor:
    """``t`` itself if each of its rows is contiguous (the kernels take any row stride, so a
    column block of a wider projection is read in place), else a contiguous copy."""
    expected = 1
    for size, stride in zip(reversed(t.shape[1:]), reversed(t.stride()[1:])):
        if size != 1 and stride != expected:
            return t.contiguous()
        expected *= size
    return t if t.stride(0) >= 0 else t.contiguous()


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
    # The gradient of a_dst needs two extra forward results (see the backward kernel).
    save_for_a_dst = (a_dst is not None and a_dst.requires_grad
                      and torch.is_grad_enabled())
    out, _, alpha, _, _ = torch.ops.gat_pyg.segment_attention_fwd(
        *index, _node_rows(h), _node_rows(a_src), None if a_dst is None else _node_rows(a_dst),
        None if a_edge is None else a_edge.contiguous(),
        float(negative_slope), dropout, seed, bool(return_alpha), save_for_a_dst)
    return out, (alpha if return_alpha else None)
