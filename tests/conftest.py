"""Shared fixtures: PyG's utilities without ``torch_scatter``, a clean graph cache, and the
read-only data sets in ``shared/data`` beside the repository."""
import contextlib
from pathlib import Path

import pytest
import torch_geometric.typing

from gat_pyg.ops.graph import graph_cache

SHARED_DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data'


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


@pytest.fixture(scope='session')
def shared_data() -> Path:
    """``shared/data`` beside the repository (read-only: never write into it)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f'no shared data sets at {SHARED_DATA}')
    return SHARED_DATA


@pytest.fixture(scope='session')
def cora(shared_data, tmp_path_factory):
    """``(data, num_features, num_classes)`` of Planetoid Cora (public split), processed in
    a temporary folder."""
    from gat_pyg.data import load_dataset
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv('GAT_PYG_CACHE', str(tmp_path_factory.mktemp('gat_pyg_cache')))
        _, data = load_dataset('Cora', shared_data)
    return data, data.num_features, int(data.y.max()) + 1


@pytest.fixture
def interrupted_evaluate(monkeypatch):
    """``with interrupted_evaluate(module, call):`` the ``call``-th call of
    ``module.evaluate`` inside the block raises :class:`KeyboardInterrupt`, as a Ctrl-C
    during that evaluation would; after the block the real function is back."""
    @contextlib.contextmanager
    def interrupt(module, call: int):
        real, calls = module.evaluate, []

        def evaluate(*args):
            calls.append(1)
            if len(calls) == call:
                raise KeyboardInterrupt
            return real(*args)
        monkeypatch.setattr(module, 'evaluate', evaluate)
        try:
            yield
        finally:
            monkeypatch.setattr(module, 'evaluate', real)
    return interrupt


@pytest.fixture
def impl(request):
    """An :class:`implementations.Implementation` (``@implementations.parametrize()``), its
    backend in force for the duration of the test."""
    from gat_pyg import ops
    with ops.use_backend(request.param.backend):
        yield request.param
