"""Attention layers, one per file, on the shared edge handling (:mod:`.edges`) and stages
(:mod:`.attention`)."""
from typing import Type

import torch_geometric.nn
from torch_geometric.nn.conv import MessagePassing

from gat_pyg.nn.conv.gat_conv import GATConv
from gat_pyg.nn.conv.gatv2_conv import GATv2Conv

__all__ = ['GATConv', 'GATv2Conv', 'CONVS', 'IMPLEMENTATIONS', 'attention_layer']

CONVS = ('gat', 'gatv2')
IMPLEMENTATIONS = ('ours', 'pyg')
_CLASSES = {('gat', 'ours'): GATConv, ('gatv2', 'ours'): GATv2Conv,
            ('gat', 'pyg'): torch_geometric.nn.GATConv,
            ('gatv2', 'pyg'): torch_geometric.nn.GATv2Conv}


def attention_layer(conv: str = 'gat', layer: str = 'ours') -> Type[MessagePassing]:
    """The class of attention layer ``conv`` (``'gat'`` or ``'gatv2'``), ours
    (``layer='ours'``) or PyG's (``'pyg'``)."""
    if conv not in CONVS:
        raise ValueError(f"Unknown conv '{conv}' (choose from {', '.join(CONVS)})")
    if layer not in IMPLEMENTATIONS:
        raise ValueError(f"Unknown layer '{layer}' (choose 'ours' or 'pyg')")
    return _CLASSES[conv, layer]
