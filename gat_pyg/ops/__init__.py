"""Segment attention: one operator behind every attention form of the package.

``segment_attention`` takes a graph sorted by target (:class:`SegmentGraph`), per-source
values and per-node / per-edge score terms, and returns the attention-weighted sum per
target. Two implementations share its semantics:

- :mod:`gat_pyg.ops.fused`: a C++/OpenMP kernel for CPU tensors, compiled just in time on
  first use (and cached in ``$GAT_PYG_BUILD_DIR``, default ``~/.cache/gat_pyg/<torch
  version>``). It never forms ``[E, H, C]`` tensors and its results are bitwise
  reproducible across runs and thread counts.
- :mod:`gat_pyg.ops.reference`: pure PyTorch on PyG's utilities; the test oracle, and the
  path taken for CUDA tensors or when the extension cannot be built.

Choosing the backend: ``GAT_PYG_BACKEND=auto|fused|reference`` in the environment (read at
import), :func:`set_backend` or the :func:`use_backend` context manager (process-wide, not
per thread):

- ``auto`` (default): the fused kernel for CPU tensors if it builds; otherwise the reference,
  after one warning saying why.
- ``fused``: the fused kernel for CPU tensors; a build failure raises. CUDA tensors still use
  the reference (there is no fused CUDA kernel).
- ``reference``: always the reference.
"""
import contextlib
import os
import warnings
from typing import Iterator, Optional, Tuple

import torch
from torch import Tensor

from gat_pyg.ops import fused, reference
from gat_pyg.ops.fused import segment_attention_fused
from gat_pyg.ops.graph import SegmentGraph, build_segment_graph, graph_cache

__all__ = ['SegmentGraph', 'build_segment_graph', 'graph_cache', 'segment_attention',
           'segment_attention_fused', 'set_backend', 'get_backend', 'use_backend',
           'BACKENDS']

BACKENDS = ('auto', 'fused', 'reference')


def _check_backend(name: str) -> str:
    if not isinstance(name, str) or name.strip().lower() not in BACKENDS:
        raise ValueError(f"unknown segment-attention backend {name!r}; choose one of "
                         f"{', '.join(BACKENDS)}")
    return name.strip().lower()


def _backend_from_env() -> str:
    value = os.environ.get('GAT_PYG_BACKEND', '').strip().lower()
    if not value:
        return 'auto'
    if value not in BACKENDS:
        warnings.warn(f"GAT_PYG_BACKEND={value!r} is not one of {', '.join(BACKENDS)}; "
                      f"using 'auto'", RuntimeWarning, stacklevel=2)
        return 'auto'
    return value


_backend = _backend_from_env()
_warned_fallback = False


def get_backend() -> str:
    """The current segment-attention backend: ``'auto'``, ``'fused'`` or ``'reference'``."""
    return _backend


def set_backend(name: str) -> str:
    """Sets the segment-attention backend (``'auto'``, ``'fused'`` or ``'reference'``) for
    the whole process and returns the previous one. ``'fused'`` builds the extension now and
    raises if that fails."""
    global _backend
    name = _check_backend(name)
    if name == 'fused':
        fused.load_library()
    previous, _backend = _backend, name
    return previous


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Context manager: runs its body with the given backend, then restores the previous
    one."""
    previous = set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


@torch.compiler.assume_constant_result
def _fused_available() -> bool:
    global _warned_fallback
    if fused.is_available():
        return True
    if not _warned_fallback:
        _warned_fallback = True
        warnings.warn(
            f"gat_pyg: the fused CPU segment-attention kernel could not be built or loaded "
            f"({type(fused.load_error()).__name__}: {fused.load_error()}); using the "
            f"pure-PyTorch reference instead (slower, more memory). Set "
            f"GAT_PYG_BACKEND=reference to silence this warning.", RuntimeWarning,
            stacklevel=3)
    return False


def _uses_fused(h: Tensor) -> bool:
    if _backend == 'reference' or h.device.type != 'cpu':
        return False
    if _backend == 'fused':
        return True  # segment_attention_fused raises if the extension cannot be loaded
    return _fused_available()


def segment_attention(graph: SegmentGraph, h: Tensor, a_src: Tensor, a_dst: Optional[Tensor],
                      a_edge: Optional[Tensor], negative_slope: float, dropout: float = 0.0,
                      seed: Optional[Tensor] = None,
                      return_alpha: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
    """Segment attention (see :func:`gat_pyg.ops.reference.segment_attention` for the
    arguments and result), on the backend chosen by :func:`set_backend`."""
    if _uses_fused(h):
        return segment_attention_fused(graph, h, a_src, a_dst, a_edge, negative_slope,
                                       dropout, seed, return_alpha)
    return reference.segment_attention(graph, h, a_src, a_dst, a_edge, negative_slope,
                                       dropout, seed, return_alpha)
