"""Attention layers, one per file, on the shared edge handling (:mod:`.edges`) and stages
(:mod:`.attention`)."""
from gat_pyg.nn.conv.gat_conv import GATConv

__all__ = ['GATConv']
