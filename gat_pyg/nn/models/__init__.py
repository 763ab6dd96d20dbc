"""Ready-made models built on the package's layers."""
from gat_pyg.nn.models.gat import GAT

__all__ = ['GAT']
