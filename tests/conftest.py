"""Shared fixtures: PyG's utilities without ``torch_scatter``, and a clean graph cache."""
import pytest
import torch_geometric.typing

from gat_pyg.ops.graph import graph_cache


@pytest.fixture
def no_torch_scatter(monkeypatch):
    """PyG's utilities fall back to pure PyTorch for the duration of the test."""
    monkeypatch.setattr(torch_geometric.typing, 'WITH_TORCH_SCATTER', False)


@pytest.fixture
def clean_graph_cache():
    """The global :data:`gat_pyg.ops.graph.graph_cache`, emptied, counters zeroed."""
    graph_cache.clear()
    yield graph_cache
    graph_cache.clear()
