from gat_pyg.nn.gat_conv import GATConv

__all__ = ['GATConv']
