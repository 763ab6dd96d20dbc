"""The CPU kernel: C++/OpenMP, built just in time on first use (:mod:`.build`).

It never forms ``[E, H, C]`` tensors, takes ``int32`` or ``int64`` graphs (``int32`` where
they fit) and its results are bitwise reproducible across runs and thread counts. The
formulas are in the headers of ``csrc/segment_attention_forward.cpp`` and
``csrc/segment_attention_backward.cpp``.
"""
import torch

from gat_pyg.ops.backends import Kernel, register_kernel
from gat_pyg.ops.cpu.build import build_directory, load_extension
from gat_pyg.ops.graph import GraphLayout

__all__ = ['KERNEL', 'segment_attention', 'segment_attention_v2', 'build_directory']

KERNEL = Kernel('cpu', 'cpu', load_extension,
                GraphLayout(index_dtypes=(torch.int32, torch.int64), csc=True))
register_kernel(KERNEL)
segment_attention = KERNEL.segment_attention
segment_attention_v2 = KERNEL.segment_attention_v2
