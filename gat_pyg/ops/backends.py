"""Kernels per device type, and which implementation a call runs.

A *kernel* is one device type's implementation of the segment-attention operators
(:mod:`gat_pyg.ops._library`, both score families): loading it registers them with
:mod:`torch.library`. Each device type has at most one; a device type without one, or
whose kernel cannot be loaded, runs the pure-PyTorch reference
(:mod:`gat_pyg.ops.reference`). The backend chooses between them, process-wide (not per
thread): ``GAT_PYG_BACKEND`` in the environment (read at import), :func:`set_backend` or
:func:`use_backend`.

- ``auto`` (default): a device's kernel where it loads and is marked for ``auto``;
  otherwise the reference, after one warning saying why the kernel did not load.
- ``kernel`` (``fused`` is an older name for it): the device's kernel; a device type
  without one, or a kernel that fails to load, raises.
- ``reference``: the reference on every device.

The choice for a device type is made once, on its first call, and kept until the backend
changes. See ``docs/architecture.md`` for adding a kernel.
"""
import contextlib
import os
import threading
import warnings
from typing import Callable, Dict, Iterator, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from gat_pyg.ops._library import segment_attention_op, segment_attention_v2_op
from gat_pyg.ops.graph import GraphLayout, SegmentGraph

__all__ = ['BACKENDS', 'Kernel', 'KernelStatus', 'register_kernel', 'available_kernels',
           'get_backend', 'set_backend', 'use_backend', 'uses_kernel', 'graph_layout',
           'REFERENCE_LAYOUT']

BACKENDS = ('auto', 'kernel', 'reference')
_ALIASES = {'fused': 'kernel'}

# The reference runs on PyG's utilities, which take int64 indices and never need the CSC.
REFERENCE_LAYOUT = GraphLayout(index_dtypes=(torch.int64, ), csc=False)


class Kernel:
    """One device type's kernel.

    Args:
        name: what :func:`available_kernels` calls it.
        device_type: the :attr:`torch.device.type` it serves (``'cpu'``, ``'cuda'``).
        load: makes the kernel's implementation of the operator available for
            ``device_type`` (building it if need be); raises, saying why, if it cannot.
        layout: the :class:`~gat_pyg.ops.graph.GraphLayout` of the graphs it runs on.
        auto: whether the ``auto`` backend takes it (``False``: only ``kernel`` does).
    """
    def __init__(self, name: str, device_type: str, load: Callable[[], None],
                 layout: GraphLayout = GraphLayout(), auto: bool = True):
        self.name = name
        self.device_type = device_type
        self.layout = layout
        self.auto = auto
        self._load = load
        self._lock = threading.Lock()
        self._loaded = False
        self._error: Optional[BaseException] = None

    def load(self) -> None:
        """Loads the kernel once. Raises the load error; a failure is remembered, so later
        calls raise it again without retrying (an interrupt is not remembered)."""
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            if self._error is not None:
                raise self._error
            try:
                self._load()
            except Exception as error:
                self._error = error
                raise
            self._loaded = True

    def try_load(self) -> bool:
        """Whether the kernel is (or now gets) loaded; never raises."""
        try:
            self.load()
        except Exception:
            return False
        return True

    def _entry(self, values: Tensor) -> None:
        self.load()
        if not isinstance(values, Tensor) or values.device.type != self.device_type:
            raise ValueError(f"segment_attention: the {self.name} kernel runs on "
                             f"{self.device_type} tensors (got "
                             f"{getattr(values, 'device', type(values).__name__)})")

    def segment_attention(self, graph: SegmentGraph, h: Tensor, a_src: Tensor,
                          a_dst: Optional[Tensor], a_edge: Optional[Tensor],
                          negative_slope: float, dropout: float = 0.0,
                          seed: Optional[Tensor] = None,
                          return_alpha: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
        """Additive-score segment attention on this kernel, whatever the backend;
        arguments and result as :func:`gat_pyg.ops.reference.segment_attention`, with the
        tensors on this kernel's device type."""
        self._entry(h)
        return segment_attention_op(graph, h, a_src, a_dst, a_edge, negative_slope, dropout,
                                    seed, return_alpha)

    def segment_attention_v2(self, graph: SegmentGraph, x_l: Tensor, x_r: Tensor,
                             att: Tensor, edge_attr: Optional[Tensor],
                             w_edge: Optional[Tensor], negative_slope: float,
                             dropout: float = 0.0, seed: Optional[Tensor] = None,
                             return_alpha: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
        """Vector-score segment attention on this kernel, whatever the backend; arguments
        and result as :func:`gat_pyg.ops.reference.segment_attention_v2`."""
        self._entry(x_l)
        return segment_attention_v2_op(graph, x_l, x_r, att, edge_attr, w_edge,
                                       negative_slope, dropout, seed, return_alpha)

    @property
    def error(self) -> Optional[BaseException]:
        """The error of a failed load, or ``None``."""
        return self._error

    def __repr__(self) -> str:
        return f'Kernel({self.name!r}, device_type={self.device_type!r}, auto={self.auto})'


class KernelStatus(NamedTuple):
    """What :func:`available_kernels` says of one device type's kernel."""
    name: str
    loaded: bool
    auto: bool  # whether the 'auto' backend takes it
    reason: Optional[str]  # why it is not loaded (None when it is)


_kernels: Dict[str, Kernel] = {}
_choices: Dict[str, bool] = {}  # device type -> runs its kernel (made once per backend)
_warned = set()


def register_kernel(kernel: Kernel) -> None:
    """Makes ``kernel`` the kernel of its device type (replacing any other)."""
    _kernels[kernel.device_type] = kernel
    _choices.clear()


def available_kernels() -> Dict[str, KernelStatus]:
    """Per device type with a registered kernel, whether that kernel is loaded, or why not
    (a build error, a missing package). Loads each kernel not tried yet (the CPU kernel's
    first build takes about a minute). Device types not listed run the reference."""
    status = {}
    for device_type, kernel in _kernels.items():
        loaded = kernel.try_load()
        reason = None if loaded else f'{type(kernel.error).__name__}: {kernel.error}'
        status[device_type] = KernelStatus(kernel.name, loaded, kernel.auto, reason)
    return status


def _normalised(name: str) -> str:
    value = name.strip().lower() if isinstance(name, str) else name
    value = _ALIASES.get(value, value)
    if value not in BACKENDS:
        raise ValueError(f"unknown segment-attention backend {name!r}; choose one of "
                         f"{', '.join(BACKENDS)}")
    return value


def _backend_from_env() -> str:
    value = os.environ.get('GAT_PYG_BACKEND', '').strip()
    if not value:
        return 'auto'
    try:
        return _normalised(value)
    except ValueError:
        warnings.warn(f"GAT_PYG_BACKEND={value!r} is not one of {', '.join(BACKENDS)}; "
                      f"using 'auto'", RuntimeWarning, stacklevel=2)
        return 'auto'


_backend = _backend_from_env()


def get_backend() -> str:
    """The current backend: ``'auto'``, ``'kernel'`` or ``'reference'``."""
    return _backend


def set_backend(name: str) -> str:
    """Sets the backend (``'auto'``, ``'kernel'`` or ``'reference'``; ``'fused'`` means
    ``'kernel'``) for the whole process and returns the previous one."""
    global _backend
    name = _normalised(name)
    previous, _backend = _backend, name
    _choices.clear()
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


def _choose(device_type: str) -> bool:
    if _backend == 'reference':
        return False
    kernel = _kernels.get(device_type)
    if kernel is None:
        if _backend == 'kernel':
            raise RuntimeError(f"gat_pyg: no segment-attention kernel for device type "
                               f"{device_type!r} (kernels: {sorted(_kernels) or 'none'}); "
                               f"use the 'auto' or 'reference' backend")
        return False
    if _backend == 'auto' and not kernel.auto:
        return False
    if _backend == 'kernel':
        kernel.load()  # raises why not
        return True
    if kernel.try_load():
        return True
    if kernel.name not in _warned:
        _warned.add(kernel.name)
        warnings.warn(
            f"gat_pyg: the {kernel.name} segment-attention kernel could not be loaded "
            f"({type(kernel.error).__name__}: {kernel.error}); using the pure-PyTorch "
            f"reference instead (slower, more memory). Set GAT_PYG_BACKEND=reference to "
            f"silence this warning.", RuntimeWarning, stacklevel=4)
    return False


@torch.compiler.assume_constant_result
def uses_kernel(device_type: str) -> bool:
    """Whether a call on tensors of ``device_type`` runs that device's kernel under the
    current backend (``False``: the reference). Decided on the first call per device type
    and backend; raises under the ``kernel`` backend if there is no kernel to run."""
    choice = _choices.get(device_type)
    if choice is None:
        choice = _choices[device_type] = _choose(device_type)
    return choice


def graph_layout(device: torch.device) -> GraphLayout:
    """The :class:`~gat_pyg.ops.graph.GraphLayout` that the implementation running on
    ``device`` needs."""
    device_type = torch.device(device).type
    return _kernels[device_type].layout if uses_kernel(device_type) else REFERENCE_LAYOUT
