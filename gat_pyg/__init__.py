"""gat_pyg: fast, memory-lean Graph Attention Network layers for PyTorch Geometric."""
__version__ = '0.1.0'

from gat_pyg import nn, ops  # noqa: E402

__all__ = ['nn', 'ops', '__version__']
