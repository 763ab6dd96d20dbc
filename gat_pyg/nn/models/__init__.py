"""Ready-made models built on the package's layers."""
from gat_pyg.nn.models.gat import GAT, input_dropout

__all__ = ['GAT', 'input_dropout']
