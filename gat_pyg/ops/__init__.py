"""Segment attention: one operator behind every attention form of the package.

``segment_attention`` takes a graph sorted by target (:class:`SegmentGraph`), per-source
values and per-node / per-edge score terms, and returns the attention-weighted sum per
target. :mod:`gat_pyg.ops.reference` is the pure-PyTorch implementation.
"""
from gat_pyg.ops.graph import SegmentGraph, build_segment_graph, graph_cache
from gat_pyg.ops.reference import segment_attention

__all__ = ['SegmentGraph', 'build_segment_graph', 'graph_cache', 'segment_attention']
