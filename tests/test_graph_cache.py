"""The segment-graph format (:func:`build_segment_graph`) and its per-tensor cache
(:data:`graph_cache`), alone and as the layer uses them."""
import gc

import pytest
import torch
import torch_geometric.typing
from torch_geometric.nn import GATConv as PyGGATConv

from gat_pyg.nn import GATConv
from gat_pyg.ops.graph import (GraphCache, GraphLayout, build_segment_graph,
                               segment_graph_from_ptr)

# build_segment_graph #########################################################


def _random_edges(kind: str, num_src: int, num_dst: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    if kind == 'empty':
        return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    num_edges = 200
    src = torch.randint(0, num_src, (num_edges, ), generator=gen)
    high = num_dst // 3 if kind == 'isolated' else num_dst
    dst = torch.randint(0, max(high, 1), (num_edges, ), generator=gen)
    if kind == 'dups':
        src, dst = src.repeat(3), dst.repeat(3)
    return src, dst


def _is_permutation(perm: torch.Tensor, n: int) -> bool:
    return perm.numel() == n and torch.equal(perm.sort().values, torch.arange(n))


@pytest.mark.parametrize('index_dtype', [torch.int64, torch.int32])
@pytest.mark.parametrize('kind', ['random', 'isolated', 'dups', 'empty'])
@pytest.mark.parametrize('sizes', [(30, 30), (40, 17), (5, 60)])
def test_build_segment_graph_invariants(kind, sizes, index_dtype):
    num_src, num_dst = sizes
    src, dst = _random_edges(kind, num_src, num_dst, seed=num_src * 100 + num_dst)
    g = build_segment_graph(src, dst, num_src, num_dst, GraphLayout((index_dtype, )))
    csr_only = build_segment_graph(src, dst, num_src, num_dst,
                                   GraphLayout((index_dtype, ), csc=False))
    assert not csr_only.has_csc and g.has_csc and g.index_dtype == index_dtype
    assert all(torch.equal(a, b) for a, b in zip(csr_only[:3], g[:3]))
    num_edges = src.numel()
    assert g.num_edges == num_edges and (g.num_src, g.num_dst) == (num_src, num_dst)
    for name in ('ptr', 'src', 'perm', 'src_ptr', 'csc_dst', 'csc_slot'):
        assert getattr(g, name).dtype == index_dtype, name
    ptr, gsrc, perm = g.ptr.long(), g.src.long(), g.perm.long()
    src_ptr, csc_dst, csc_slot = g.src_ptr.long(), g.csc_dst.long(), g.csc_slot.long()

    # CSR: ptr monotone from 0 to E, one segment per target; perm a permutation of the
    # caller's edges, sorted by target and stable within a target.
    assert ptr.shape == (num_dst + 1, ) and ptr[0] == 0 and ptr[-1] == num_edges
    assert bool((ptr[1:] >= ptr[:-1]).all())
    assert _is_permutation(perm, num_edges)
    dst_sorted = g.dst().long()
    assert torch.equal(dst_sorted, dst[perm]) and torch.equal(gsrc, src[perm])
    assert bool((dst_sorted[1:] >= dst_sorted[:-1]).all())
    same_target = dst_sorted[1:] == dst_sorted[:-1]
    assert bool((perm[1:] > perm[:-1])[same_target].all())
    assert torch.equal(ptr[1:] - ptr[:-1], torch.bincount(dst, minlength=num_dst))

    # CSC: grouped by source, stable in CSR-slot order, and the same edges as the CSR.
    assert src_ptr.shape == (num_src + 1, ) and src_ptr[0] == 0
    assert src_ptr[-1] == num_edges and bool((src_ptr[1:] >= src_ptr[:-1]).all())
    assert torch.equal(src_ptr[1:] - src_ptr[:-1], torch.bincount(src, minlength=num_src))
    assert _is_permutation(csc_slot, num_edges)
    csc_src = gsrc[csc_slot]
    expected_csc_src = torch.arange(num_src).repeat_interleave(src_ptr[1:] - src_ptr[:-1])
    assert torch.equal(csc_src, expected_csc_src)
    same_source = csc_src[1:] == csc_src[:-1]
    assert bool((csc_slot[1:] > csc_slot[:-1])[same_source].all())
    assert torch.equal(csc_dst, dst_sorted[csc_slot])
    # Every caller edge appears once in each, with its own source and target.
    assert torch.equal(src[perm[csc_slot]], csc_src)
    assert torch.equal(dst[perm[csc_slot]], csc_dst)


def test_build_segment_graph_is_deterministic():
    src, dst = _random_edges('dups', 50, 50, seed=1)
    a = build_segment_graph(src, dst, 50, 50)
    b = build_segment_graph(src.clone(), dst.clone(), 50, 50)
    for x, y in zip(a, b):
        assert torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y


def test_layout_index_dtype_and_csc():
    narrow = GraphLayout()
    assert narrow.index_dtype(10, 5, 5) == torch.int32
    assert narrow.index_dtype(2**31 - 1, 5, 5) == torch.int32
    assert narrow.index_dtype(2**31, 5, 5) == torch.int64
    assert narrow.index_dtype(10, 5, 2**31 - 1) == torch.int64  # ptr holds num_dst + 1
    with pytest.raises(ValueError, match='does not fit'):
        GraphLayout((torch.int32, )).index_dtype(2**31, 5, 5)
    src, dst = _random_edges('random', 20, 20, seed=3)
    assert build_segment_graph(src.int(), dst.int(), 20, 20,
                               GraphLayout((torch.int64, ))).index_dtype == torch.int64


@pytest.mark.parametrize('csc', [True, False])
@pytest.mark.parametrize('index_dtype', [torch.int64, torch.int32])
def test_segment_graph_from_ptr_matches_the_sorted_build(csc, index_dtype):
    batch = torch.tensor([0, 0, 1, 3, 3, 3])
    layout = GraphLayout((index_dtype, ), csc)
    ptr = torch.tensor([0, 2, 3, 3, 6])
    from_ptr = segment_graph_from_ptr(ptr, 6, layout)
    built = build_segment_graph(torch.arange(6), batch, 6, 4, layout)
    assert from_ptr.has_csc == csc and from_ptr.index_dtype == index_dtype
    for a, b in zip(from_ptr, built):
        assert (a is None and b is None) or (torch.equal(a, b) if isinstance(a, torch.Tensor)
                                             else a == b)


def test_build_segment_graph_rejects_out_of_range():
    src, dst = torch.tensor([0, 1, 5]), torch.tensor([1, 2, 0])
    with pytest.raises(IndexError, match='source index 5'):
        build_segment_graph(src, dst, 5, 5)
    with pytest.raises(IndexError, match='negative target index'):
        build_segment_graph(dst, torch.tensor([0, -1, 0]), 5, 5)
    # check=False: the caller has checked (the layers check edge_index once per graph).
    graph = build_segment_graph(src, dst, 6, 5, check=False)
    assert graph.num_src == 6


# GraphCache ##################################################################


def test_graph_cache_hits_misses_and_invalidation():
    cache = GraphCache()
    builds = []

    def build(tag):
        def fn():
            builds.append(tag)
            return tag
        return fn

    a = torch.arange(10)
    assert cache.get_or_build(a, 'k', build('a1')) == 'a1'
    assert cache.get_or_build(a, 'k', build('a2')) == 'a1'  # hit
    assert (cache.hits, cache.misses) == (1, 1)
    assert cache.get_or_build(a, 'other', build('a3')) == 'a3'  # another key: another entry
    assert cache.get_or_build(a.clone(), 'k', build('b')) == 'b'  # equal values, not same
    assert len(cache) == 2  # the clone is gone, and so is its entry
    a[0] = 5  # in place: a new version
    assert cache.get_or_build(a, 'k', build('a4')) == 'a4'
    assert cache.get_or_build(a, 'k', build('a5')) == 'a4'
    assert builds == ['a1', 'a3', 'b', 'a4']
    assert (cache.hits, cache.misses) == (2, 4)
    del a
    gc.collect()
    assert len(cache) == 0
    cache.clear()
    assert (cache.hits, cache.misses, len(cache)) == (0, 0, 0)


# The cache as the layer uses it ##############################################


def _pair(add_self_loops: bool, **kwargs):
    torch.manual_seed(0)
    pyg = PyGGATConv(6, 4, heads=2, add_self_loops=add_self_loops, **kwargs).double()
    ours = GATConv(6, 4, heads=2, add_self_loops=add_self_loops, **kwargs).double()
    ours.load_state_dict(pyg.state_dict())
    return pyg.eval(), ours.eval()


def _check(ours, pyg, *args):
    out, (index, alpha) = ours(*args, return_attention_weights=True)
    ref, (ref_index, ref_alpha) = pyg(*args, return_attention_weights=True)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-10)
    assert torch.equal(index, ref_index)
    torch.testing.assert_close(alpha, ref_alpha, atol=1e-10, rtol=1e-10)
    return out


@pytest.mark.parametrize('add_self_loops', [False, True])
def test_layer_hits_cache_on_repeated_calls(clean_graph_cache, add_self_loops):
    pyg, ours = _pair(add_self_loops)
    x = torch.randn(20, 6, dtype=torch.float64)
    edge_index = torch.randint(0, 20, (2, 60))
    per_call = 1  # one entry per edge_index: the looped edges and their segment graph
    _check(ours, pyg, x, edge_index)
    assert (clean_graph_cache.hits, clean_graph_cache.misses) == (0, per_call)
    for calls in range(1, 4):
        _check(ours, pyg, x.clone(), edge_index)  # new features, same graph
        assert clean_graph_cache.hits == calls * per_call
        assert clean_graph_cache.misses == per_call
    # Another tensor with the same values is another graph as far as the cache knows.
    _check(ours, pyg, x, edge_index.clone())
    assert clean_graph_cache.misses == 2 * per_call


@pytest.mark.parametrize('add_self_loops', [False, True])
def test_in_place_change_invalidates(clean_graph_cache, add_self_loops):
    pyg, ours = _pair(add_self_loops)
    x = torch.randn(20, 6, dtype=torch.float64)
    edge_index = torch.randint(0, 20, (2, 60))
    before = _check(ours, pyg, x, edge_index)
    misses = clean_graph_cache.misses
    edge_index[1, :30] = (edge_index[1, :30] + 7) % 20  # same tensor, other targets
    after = _check(ours, pyg, x, edge_index)  # correct, so rebuilt
    assert clean_graph_cache.misses == 2 * misses
    assert not torch.allclose(before, after)
    edge_index[0].zero_()  # a view: the same version counter
    _check(ours, pyg, x, edge_index)
    assert clean_graph_cache.misses == 3 * misses


def test_freed_tensor_drops_entry(clean_graph_cache):
    pyg, ours = _pair(True)
    x = torch.randn(20, 6, dtype=torch.float64)
    edge_index = torch.randint(0, 20, (2, 60))
    _check(ours, pyg, x, edge_index)
    assert len(clean_graph_cache) == 1  # on edge_index: its looped edges and their graph
    del edge_index
    gc.collect()
    assert len(clean_graph_cache) == 0
    # Many short-lived graphs leave nothing behind (and never hit a reused id).
    for seed in range(20):
        gen = torch.Generator().manual_seed(seed)
        _check(ours, pyg, x, torch.randint(0, 20, (2, 60), generator=gen))
    gc.collect()
    assert len(clean_graph_cache) == 0
    assert clean_graph_cache.hits == 0


def test_num_nodes_are_part_of_the_key(clean_graph_cache):
    """The same edge_index with more nodes (isolated extra nodes) is another graph."""
    pyg, ours = _pair(True)
    edge_index = torch.randint(0, 12, (2, 40))
    for num_nodes in (12, 15, 12, 15, 20):
        x = torch.randn(num_nodes, 6, dtype=torch.float64)
        out = _check(ours, pyg, x, edge_index)
        assert out.shape == (num_nodes, 8)
    assert clean_graph_cache.misses == 3  # 12, 15 and 20 nodes
    assert clean_graph_cache.hits == 2
    bipartite_pyg, bipartite = _pair(False)
    x_src = torch.randn(12, 6, dtype=torch.float64)
    for num_dst in (12, 13):  # the number of targets only
        _check(bipartite, bipartite_pyg, (x_src, torch.randn(num_dst, 6, dtype=torch.float64)),
               edge_index)


def test_flow_is_part_of_the_key(clean_graph_cache):
    edge_index = torch.randint(0, 12, (2, 40))
    x = torch.randn(12, 6, dtype=torch.float64)
    for flow in ('source_to_target', 'target_to_source', 'source_to_target'):
        pyg, ours = _pair(False, flow=flow)
        _check(ours, pyg, x, edge_index)
    assert (clean_graph_cache.hits, clean_graph_cache.misses) == (1, 2)


@pytest.mark.skipif(not torch_geometric.typing.WITH_TORCH_SPARSE,
                    reason='torch_sparse is not installed')
def test_sparse_tensors_sharing_col(clean_graph_cache):
    """Two SparseTensors may share their col tensor but not their row: the cached graph
    must depend on both."""
    from torch_sparse import SparseTensor
    pyg, ours = _pair(False)
    x = torch.randn(6, 6, dtype=torch.float64)
    col = torch.tensor([1, 2, 3, 0, 4, 5])
    rows = [torch.tensor([0, 0, 1, 2, 3, 5]), torch.tensor([0, 1, 2, 3, 4, 5])]
    adjs = [SparseTensor(row=row, col=col, sparse_sizes=(6, 6), is_sorted=True)
            for row in rows]
    assert adjs[0].storage.col() is adjs[1].storage.col()
    for adj in adjs + adjs:
        torch.testing.assert_close(ours(x, adj), pyg(x, adj), atol=1e-10, rtol=1e-10)
    assert (clean_graph_cache.hits, clean_graph_cache.misses) == (2, 2)


@pytest.mark.parametrize('form', ['long', 'int32'])
@pytest.mark.parametrize('add_self_loops', [False, True])
def test_cache_hit_checks_and_converts_nothing(clean_graph_cache, monkeypatch, form,
                                               add_self_loops):
    """The indices are checked once, when the graph is built; a cache hit checks nothing
    again, and an int32 edge_index gives the kernel an int32 graph."""
    from gat_pyg import ops
    from gat_pyg.nn.conv import edges
    checks = []
    real = edges.check_node_indices
    monkeypatch.setattr(edges, 'check_node_indices',
                        lambda *args: checks.append(1) or real(*args))
    pyg, ours = _pair(add_self_loops, edge_dim=3)
    x = torch.randn(20, 6, dtype=torch.float64)
    edge_index = torch.randint(0, 20, (2, 60))
    edge_index = edge_index.int() if form == 'int32' else edge_index
    edge_attr = torch.randn(60, 3, dtype=torch.float64)
    for _ in range(3):
        out, (index, alpha) = ours(x, edge_index, edge_attr, return_attention_weights=True)
        ref, (ref_index, ref_alpha) = pyg(x, edge_index.long(), edge_attr,
                                          return_attention_weights=True)
        torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(alpha, ref_alpha, atol=1e-10, rtol=1e-10)
    assert len(checks) == 1 and clean_graph_cache.misses == 1
    if ops.backends.uses_kernel('cpu'):
        (entry, ) = clean_graph_cache._entries.values()
        assert entry.value.graph.index_dtype == torch.int32
