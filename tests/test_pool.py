"""GlobalAttentionPool: parity with PyG's AttentionalAggregation, the softmax per graph and
head, invariances, gradients, and input checks, on every CPU implementation of segment
attention."""
import pytest
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.nn import MLP, SAGEConv
from torch_geometric.nn.aggr import AttentionalAggregation

from gat_pyg import ops
from gat_pyg.nn import GlobalAttentionPool
from implementations import IMPLEMENTATIONS

# The pooling tests run on CPU tensors: the reference and the CPU kernel where it loads.
BACKENDS = [impl.backend for impl in IMPLEMENTATIONS if impl.device == 'cpu']


@pytest.fixture(params=BACKENDS)
def backend(request):
    with ops.use_backend(request.param):
        yield request.param


def _batch(sizes, seed=0, features=5, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(sum(sizes), features, generator=generator, dtype=dtype)
    batch = torch.arange(len(sizes)).repeat_interleave(torch.tensor(sizes))
    return x, batch


def _pool(heads=1, concat=True, features=5, out=4, dtype=torch.float64, with_nn=True):
    torch.manual_seed(0)
    gate = torch.nn.Sequential(torch.nn.Linear(features, 8), torch.nn.Tanh(),
                               torch.nn.Linear(8, heads))
    value = torch.nn.Linear(features, out) if with_nn else None
    return GlobalAttentionPool(gate, value, heads=heads, concat=concat).to(dtype)


@pytest.mark.parametrize('with_nn', [True, False])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_matches_attentional_aggregation(backend, with_nn, dtype):
    pool = _pool(with_nn=with_nn, dtype=dtype)
    theirs = AttentionalAggregation(pool.gate_nn, pool.nn)
    # Graph sizes include one node and an empty graph (index 3) in the middle.
    x, batch = _batch([3, 1, 7, 0, 5], dtype=dtype)
    x.requires_grad_(True)
    ours_out = pool(x, batch, dim_size=5)
    theirs_out = theirs(x, batch, dim_size=5)
    tol = dict(atol=1e-12, rtol=1e-10) if dtype == torch.float64 else dict(atol=1e-6,
                                                                          rtol=1e-5)
    torch.testing.assert_close(ours_out, theirs_out, **tol)
    weight = torch.randn_like(ours_out)
    params = [x] + list(pool.parameters())
    ours_grads = torch.autograd.grad((ours_out * weight).sum(), params)
    theirs_grads = torch.autograd.grad((theirs_out * weight).sum(), params)
    for mine, reference in zip(ours_grads, theirs_grads):
        torch.testing.assert_close(mine, reference, **tol)


def test_matches_attentional_aggregation_with_mlp_gate(backend):
    torch.manual_seed(1)
    gate = MLP([5, 8, 1], norm='batch_norm').double().eval()
    value = MLP([5, 8, 3]).double().eval()
    x, batch = _batch([4, 6, 2])
    ours = GlobalAttentionPool(gate, value)(x, batch)
    theirs = AttentionalAggregation(gate, value)(x, batch)
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize('heads', [1, 3])
def test_beta_is_a_softmax_per_graph_and_head(backend, heads):
    pool = _pool(heads=heads)
    x, batch = _batch([3, 1, 6, 0, 4])
    out, beta = pool(x, batch, dim_size=5, return_attention_weights=True)
    assert beta.shape == (x.size(0), heads)
    assert bool((beta > 0).all())
    sums = torch.zeros(5, heads, dtype=beta.dtype).index_add_(0, batch, beta)
    torch.testing.assert_close(sums[[0, 1, 2, 4]], torch.ones(4, heads, dtype=beta.dtype))
    assert out.shape == (5, heads * 4)
    assert bool((out[3] == 0).all())  # the empty graph pools to zeros
    # The readout is the beta-weighted sum of the values, per head.
    values = pool.nn(x)
    expected = torch.zeros(5, heads, 4, dtype=x.dtype).index_add_(
        0, batch, beta.unsqueeze(-1) * values.unsqueeze(1))
    torch.testing.assert_close(out, expected.view(5, -1))


def test_heads_concat_and_mean(backend):
    x, batch = _batch([4, 5])
    concat = _pool(heads=3, concat=True)(x, batch)
    mean = _pool(heads=3, concat=False)(x, batch)
    assert concat.shape == (2, 12) and mean.shape == (2, 4)
    torch.testing.assert_close(mean, concat.view(2, 3, 4).mean(dim=1))
    # Heads with different gates attend differently.
    assert not torch.allclose(concat.view(2, 3, 4)[:, 0], concat.view(2, 3, 4)[:, 1])


def test_permutation_invariance_within_a_graph(backend):
    pool = _pool(heads=2)
    x, batch = _batch([5, 8, 3])
    out = pool(x, batch)
    # Shuffle the nodes inside each graph (the batch stays sorted).
    perm = torch.cat([torch.tensor([4, 2, 0, 1, 3]), 5 + torch.randperm(8), 13 + torch.tensor([2, 0, 1])])
    torch.testing.assert_close(pool(x[perm], batch), out, atol=1e-12, rtol=1e-12)


def test_batching_invariance(backend):
    pool = _pool(heads=2)
    graphs = [Data(x=_batch([n], seed=n)[0]) for n in (4, 1, 9)]
    batch = Batch.from_data_list(graphs)
    pooled = pool(batch.x, batch.batch, dim_size=batch.num_graphs)
    for k, graph in enumerate(graphs):
        alone = pool(graph.x, torch.zeros(graph.num_nodes, dtype=torch.long))
        torch.testing.assert_close(pooled[k:k + 1], alone, atol=1e-12, rtol=1e-12)
    by_ptr = pool(batch.x, ptr=batch.ptr)
    assert torch.equal(by_ptr, pooled)


def test_no_index_pools_everything_into_one_graph(backend):
    pool = _pool()
    x, _ = _batch([6])
    torch.testing.assert_close(pool(x), pool(x, torch.zeros(6, dtype=torch.long)))


def test_stable_for_large_scores(backend):
    gate = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        gate.weight.fill_(1.0)
    pool = GlobalAttentionPool(gate).double()
    x = torch.tensor([[1000.0], [999.0], [-1000.0]], dtype=torch.float64)
    out, beta = pool(x, torch.zeros(3, dtype=torch.long), return_attention_weights=True)
    assert torch.isfinite(out).all() and torch.isfinite(beta).all()
    e = torch.tensor([1.0, torch.exp(torch.tensor(-1.0)).item(), 0.0], dtype=torch.float64)
    torch.testing.assert_close(beta.view(-1), e / e.sum())


@pytest.mark.parametrize('heads,concat', [(1, True), (3, True), (3, False)])
def test_gradcheck(backend, heads, concat):
    pool = _pool(heads=heads, concat=concat)
    x, batch = _batch([3, 1, 4, 0, 2])
    x.requires_grad_(True)
    params = list(pool.parameters())

    def readout(x, *weights):
        state = dict(zip([n for n, _ in pool.named_parameters()], weights))
        out, beta = torch.func.functional_call(pool, state, (x, batch),
                                               {'dim_size': 5,
                                                'return_attention_weights': True})
        return out, beta

    assert torch.autograd.gradcheck(readout, (x, *[p.detach().requires_grad_() for p in params]))


def test_deterministic(backend):
    pool = _pool(heads=2, dtype=torch.float32)
    x, batch = _batch([50, 70, 30], dtype=torch.float32)
    x.requires_grad_(True)
    first = pool(x, batch)
    grad_first, = torch.autograd.grad(first.sum(), x)
    second = pool(x, batch)
    grad_second, = torch.autograd.grad(second.sum(), x)
    assert torch.equal(first, second) and torch.equal(grad_first, grad_second)


def test_as_a_pyg_aggregation_in_message_passing(backend):
    torch.manual_seed(0)
    gate, value = torch.nn.Linear(5, 1).double(), torch.nn.Linear(5, 5).double()
    edge_index = torch.tensor([[1, 2, 3, 0, 4, 2], [0, 0, 0, 1, 1, 3]])  # sorted by target
    x, _ = _batch([5])
    ours = SAGEConv(5, 6, aggr=GlobalAttentionPool(gate, value)).double()
    theirs = SAGEConv(5, 6, aggr=AttentionalAggregation(gate, value)).double()
    theirs.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours(x, edge_index), theirs(x, edge_index))


def test_unsorted_batch_raises():
    pool = _pool()
    x, _ = _batch([4])
    with pytest.raises(ValueError, match='sorted'):
        pool(x, torch.tensor([0, 1, 0, 1]))


@pytest.mark.parametrize('batch,dim_size,error,match', [
    (torch.tensor([0, 0, 1, 2]), 2, ValueError, 'out of range'),
    (torch.tensor([-1, 0, 0, 1]), None, IndexError, 'negative'),
    (torch.tensor([0, 0, 1]), None, ValueError, 'one entry per node'),
    (torch.tensor([0.0, 0.0, 1.0, 1.0]), None, TypeError, 'int64'),
])
def test_bad_batch_raises(batch, dim_size, error, match):
    pool = _pool()
    x, _ = _batch([4])
    with pytest.raises(error, match=match):
        pool(x, batch, dim_size=dim_size)


@pytest.mark.parametrize('ptr,match', [
    (torch.tensor([0, 2, 3]), 'end at the number of nodes'),
    (torch.tensor([0, 3, 2, 4]), 'non-decreasing'),
    (torch.tensor([[0, 4]]), '1-D'),
])
def test_bad_ptr_raises(ptr, match):
    pool = _pool()
    x, _ = _batch([4])
    with pytest.raises(ValueError, match=match):
        pool(x, ptr=ptr)


def test_bad_gate_shape_raises():
    pool = GlobalAttentionPool(torch.nn.Linear(5, 2), heads=3).double()
    x, batch = _batch([4])
    with pytest.raises(ValueError, match=r'\[4, 3\]'):
        pool(x, batch)


def test_repr_and_reset():
    pool = _pool(heads=2)
    assert repr(pool).startswith('GlobalAttentionPool(gate_nn=') and 'heads=2' in repr(pool)
    before = pool.nn.weight.detach().clone()
    pool.reset_parameters()
    assert not torch.equal(before, pool.nn.weight)
