"""Shared fixtures: the implementation (and device) a test runs on, PyG's utilities without
``torch_scatter``, a clean graph cache, a fresh compile cache, and the read-only data sets in
``shared/data`` beside the repository."""
import contextlib
from pathlib import Path

import pytest
import torch_geometric.typing

from gat_pyg import ops
from gat_pyg.ops.graph import graph_cache
from parity import PARITY_BACKENDS

SHARED_DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data'


@pytest.fixture(scope='session', autouse=True)
def fresh_compile_cache(tmp_path_factory):
    """torch.compile's on-disk caches are keyed without the operators' schemas, so a cache
    left by an older version of the operators would serve code for the old schema: each test
    session compiles into a folder of its own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv('TORCHINDUCTOR_CACHE_DIR', str(tmp_path_factory.mktemp('inductor')))
        yield


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
    with ops.use_backend(request.param.backend):
        yield request.param


def _parity_id(param) -> str:
    impl, scatter = param
    return f'{impl.id}-{scatter}'


@pytest.fixture(params=PARITY_BACKENDS, ids=_parity_id)
def backend(request, monkeypatch):
    """The implementation of a parity test (its backend in force) and the scatter backend
    of PyG's utilities (``torch_scatter``, or PyG's pure-PyTorch fallbacks); yields the
    device to run on."""
    impl, scatter_backend = request.param
    if scatter_backend == 'torch':
        monkeypatch.setattr(torch_geometric.typing, 'WITH_TORCH_SCATTER', False)
    else:
        assert torch_geometric.typing.WITH_TORCH_SCATTER
    with ops.use_backend(impl.backend):
        yield impl.device
