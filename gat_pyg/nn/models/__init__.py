"""Ready-made models built on the package's layers."""
from gat_pyg.nn.models.gat import GAT
from gat_pyg.nn.models.graph_gat import GraphGAT

__all__ = ['GAT', 'GraphGAT']
