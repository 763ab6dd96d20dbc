"""The fused CPU segment-attention operator against the reference (the oracle), autograd
(gradcheck), the torch.library contract (opcheck, torch.compile), determinism, input
validation and backend dispatch."""
import os
import subprocess
import sys
from typing import NamedTuple, Optional

import pytest
import torch
from torch import Tensor

from gat_pyg import ops
from gat_pyg.ops import build_segment_graph, fused, reference
from gat_pyg.ops.graph import SegmentGraph

# The extension builds on first use (a minute or two, once per source version). Without a
# compiler these tests are skipped, unless CI requires the fused path (GAT_PYG_REQUIRE_FUSED=1,
# see .ci/run), where they fail instead.
REQUIRE_FUSED = os.environ.get('GAT_PYG_REQUIRE_FUSED') == '1'
pytestmark = pytest.mark.skipif(
    not REQUIRE_FUSED and not fused.is_available(),
    reason=f'fused extension unavailable: {fused.load_error()!r}')

SLOPE = 0.2


class Case(NamedTuple):
    name: str
    num_src: int = 9
    num_dst: Optional[int] = None  # None: same nodes as sources
    num_edges: int = 40
    heads: int = 3
    channels: int = 5
    with_dst: bool = True
    with_edge: bool = True
    dropout: float = 0.0
    isolated: int = 0  # targets without incoming edges
    duplicates: bool = False
    index_dtype: torch.dtype = torch.int64


CASES = [
    Case('base'),
    Case('one_head_one_channel', heads=1, channels=1),
    Case('no_a_dst', with_dst=False),
    Case('no_a_edge', with_edge=False),
    Case('scores_from_a_src_only', with_dst=False, with_edge=False),
    Case('dropout', dropout=0.3),
    Case('dropout_no_edge', dropout=0.5, with_edge=False),
    Case('bipartite', num_src=7, num_dst=11),
    Case('isolated_targets', isolated=4),
    Case('duplicate_edges', duplicates=True),
    Case('empty_graph', num_edges=0),
    Case('int32_indices', index_dtype=torch.int32, dropout=0.2),
    Case('many_heads_8_channels', heads=9, channels=8, num_edges=30),
]
IDS = [case.name for case in CASES]


def test_fused_present_where_required():
    fused.load_library()  # raises the build error, if any
    assert fused.is_available()
    assert os.path.isfile(os.path.join(fused.build_directory(), 'gat_pyg_ops.so'))


def make_graph(case: Case, generator: torch.Generator) -> SegmentGraph:
    num_dst = case.num_dst if case.num_dst is not None else case.num_src
    live = num_dst - case.isolated
    src = torch.randint(0, case.num_src, (case.num_edges,), generator=generator)
    dst = torch.randint(0, live, (case.num_edges,), generator=generator)
    if case.duplicates and case.num_edges >= 8:
        src[4:8] = src[0]
        dst[4:8] = dst[0]
    return build_segment_graph(src, dst, case.num_src, num_dst, index_dtype=case.index_dtype)


def make_inputs(case: Case, graph: SegmentGraph, dtype: torch.dtype, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)

    H, C = case.heads, case.channels
    h = rand(graph.num_src, H, C)
    a_src = rand(graph.num_src, H)
    a_dst = rand(graph.num_dst, H) if case.with_dst else None
    a_edge = rand(graph.num_edges, H) if case.with_edge else None
    return h, a_src, a_dst, a_edge


def run(fn, graph, inputs, case: Case, return_alpha: bool, seed: Tensor):
    """Forward + backward of a random linear loss on out (and alpha); returns everything."""
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in inputs]
    out, alpha = fn(graph, *leaves, SLOPE, case.dropout, seed, return_alpha)
    gen = torch.Generator().manual_seed(123)
    loss = (out * torch.randn(out.shape, generator=gen, dtype=out.dtype)).sum()
    if return_alpha:
        loss = loss + (alpha * torch.randn(alpha.shape, generator=gen, dtype=alpha.dtype)).sum()
    wrt = [t for t in leaves if t is not None]
    grads = torch.autograd.grad(loss, wrt, allow_unused=True) if loss.requires_grad else [
        None] * len(wrt)
    return out, alpha, grads


def assert_close(actual, expected, dtype):
    if dtype == torch.float64:
        tol = {'rtol': 1e-10, 'atol': 1e-12}
    else:
        tol = {'rtol': 2e-5, 'atol': 2e-6}
    if expected is None:
        assert actual is None or not actual.any()
        return
    torch.testing.assert_close(actual, expected, **tol)


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('return_alpha', [False, True])
@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_matches_reference(case, return_alpha, dtype):
    graph = make_graph(case, torch.Generator().manual_seed(1))
    inputs = make_inputs(case, graph, dtype)
    seed = torch.tensor(987654321987, dtype=torch.long)
    out, alpha, grads = run(fused.segment_attention_fused, graph, inputs, case, return_alpha,
                            seed)
    ref_out, ref_alpha, ref_grads = run(reference.segment_attention, graph, inputs, case,
                                        return_alpha, seed)
    assert out.shape == ref_out.shape and out.dtype == dtype
    assert_close(out, ref_out, dtype)
    if return_alpha:
        assert alpha.shape == (graph.num_edges, case.heads)
        assert_close(alpha, ref_alpha, dtype)
    else:
        assert alpha is None
    for grad, ref_grad in zip(grads, ref_grads):
        if ref_grad is None:
            ref_grad = torch.zeros_like(grad) if grad is not None else None
        assert_close(grad, ref_grad, dtype)


@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_gradcheck(case):
    graph = make_graph(case, torch.Generator().manual_seed(2))
    inputs = make_inputs(case, graph, torch.float64, seed=3)
    present = [t.clone().requires_grad_() for t in inputs if t is not None]
    seed = torch.tensor(42, dtype=torch.long)
    return_alpha = case.num_edges > 0

    def fn(*args):
        it = iter(args)
        h, a_src = next(it), next(it)
        a_dst = next(it) if case.with_dst else None
        a_edge = next(it) if case.with_edge else None
        out, alpha = fused.segment_attention_fused(graph, h, a_src, a_dst, a_edge, SLOPE,
                                                   case.dropout, seed, return_alpha)
        return (out, alpha) if return_alpha else out

    assert torch.autograd.gradcheck(fn, present, eps=1e-6, atol=1e-7)


def test_dropout_matches_reference_hash_bit_for_bit():
    """The kernel drops exactly the entries of reference.dropout_hash, for seeds with any
    high bits (negative ones included)."""
    case = Case('hash', num_src=30, num_edges=400, heads=4, channels=2)
    graph = make_graph(case, torch.Generator().manual_seed(4))
    h, a_src, a_dst, a_edge = make_inputs(case, graph, torch.float64)
    for value in (0, 1, 2**32 + 5, 2**62 + 12345, -1, -(2**40) - 7):
        seed = torch.tensor(value, dtype=torch.long)
        for p in (0.1, 0.5, 0.9):
            _, alpha = fused.segment_attention_fused(graph, h, a_src, a_dst, a_edge, SLOPE, p,
                                                     seed, return_alpha=True)
            keep = reference.dropout_hash(seed, torch.arange(graph.num_edges), 4) >= \
                reference.dropout_threshold(p)
            assert torch.equal(alpha != 0, keep)


def test_dropout_one_drops_everything():
    case = Case('p1')
    graph = make_graph(case, torch.Generator().manual_seed(5))
    inputs = [t.requires_grad_() for t in make_inputs(case, graph, torch.float64)]
    out, alpha = fused.segment_attention_fused(graph, *inputs, SLOPE, 1.0,
                                               torch.tensor(3), return_alpha=True)
    assert not out.any() and not alpha.any()
    out.sum().backward()
    assert all(not t.grad.any() for t in inputs)


def test_bfloat16_close_to_float32():
    case = Case('bf16', num_src=20, num_edges=120, heads=2, channels=8)
    graph = make_graph(case, torch.Generator().manual_seed(6))
    inputs = make_inputs(case, graph, torch.bfloat16)
    out, alpha, grads = run(fused.segment_attention_fused, graph, inputs, case, True,
                            torch.tensor(0))
    wide = [t.float() for t in inputs]
    ref_out, ref_alpha, ref_grads = run(reference.segment_attention, graph, wide, case, True,
                                        torch.tensor(0))
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref_out, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(alpha.float(), ref_alpha, rtol=2e-2, atol=2e-2)
    for grad, ref_grad in zip(grads, ref_grads):
        torch.testing.assert_close(grad.float(), ref_grad, rtol=5e-2, atol=5e-2)


# torch.library contract ##########################################################################

def _op_args(case: Case, return_alpha: bool, requires_grad: bool = True):
    graph = make_graph(case, torch.Generator().manual_seed(7))
    h, a_src, a_dst, a_edge = make_inputs(case, graph, torch.float64)
    tensors = [h, a_src, a_dst, a_edge]
    if requires_grad:
        tensors = [t.requires_grad_() if t is not None else None for t in tensors]
    seed = torch.tensor(11) if case.dropout > 0 else None
    return (graph.ptr, graph.src, graph.perm, graph.src_ptr, graph.csc_dst, graph.csc_slot,
            *tensors, SLOPE, case.dropout, seed, return_alpha, case.with_dst)


@pytest.mark.parametrize('case,return_alpha', [
    (Case('opcheck'), True),
    (Case('opcheck_dropout', dropout=0.4, with_edge=False), False),
    (Case('opcheck_src_only', with_dst=False, with_edge=False, index_dtype=torch.int32), True),
], ids=['full', 'dropout', 'src_only_int32'])
def test_opcheck_forward(case, return_alpha):
    torch.library.opcheck(torch.ops.gat_pyg.segment_attention_fwd.default,
                          _op_args(case, return_alpha))


def test_opcheck_backward():
    args = _op_args(Case('opcheck_bwd', dropout=0.3), True, requires_grad=False)
    out, lse, alpha, out_slope, slope_sum = torch.ops.gat_pyg.segment_attention_fwd(*args)
    ptr, src, perm, src_ptr, csc_dst, csc_slot, h, a_src, a_dst, a_edge = args[:10]
    grad_out = torch.randn_like(out)
    grad_alpha = torch.randn_like(alpha)
    torch.library.opcheck(torch.ops.gat_pyg.segment_attention_bwd.default, (
        grad_out, grad_alpha, ptr, src, perm, src_ptr, csc_dst, csc_slot, h, a_src, a_dst,
        a_edge, out, lse, out_slope, slope_sum, SLOPE, 0.3, args[12],
        [True, True, True, True]))


def test_torch_compile_fullgraph():
    case = Case('compile', num_src=12, num_edges=60, heads=2, channels=4, dropout=0.25)
    graph = make_graph(case, torch.Generator().manual_seed(8))
    inputs = make_inputs(case, graph, torch.float32)
    seed = torch.tensor(5)

    def fn(graph, h, a_src, a_dst, a_edge, seed):
        out, alpha = ops.segment_attention(graph, h, a_src, a_dst, a_edge, SLOPE, 0.25, seed,
                                           return_alpha=True)
        return (out.sum(-1) * 2.0).sum() + (alpha * alpha).sum()

    compiled = torch.compile(fn, fullgraph=True)
    with ops.use_backend('fused'):
        eager_leaves = [t.clone().requires_grad_() for t in inputs]
        compiled_leaves = [t.clone().requires_grad_() for t in inputs]
        expected = fn(graph, *eager_leaves, seed)
        actual = compiled(graph, *compiled_leaves, seed)
        expected.backward()
        actual.backward()
    torch.testing.assert_close(actual, expected)
    for a, b in zip(compiled_leaves, eager_leaves):
        torch.testing.assert_close(a.grad, b.grad)


# Determinism #####################################################################################

def _large_problem():
    gen = torch.Generator().manual_seed(9)
    n = 3000
    # Skewed degrees: a few hubs receive and send many edges.
    src = torch.cat([torch.randint(0, n, (30000,), generator=gen),
                     torch.randint(0, 10, (5000,), generator=gen)])
    dst = torch.cat([torch.randint(0, n, (30000,), generator=gen),
                     torch.randint(0, n, (5000,), generator=gen)])
    dst[:3000] = 7
    graph = build_segment_graph(src, dst, n, n)
    case = Case('large', num_src=n, num_edges=graph.num_edges, heads=4, channels=8,
                dropout=0.1)
    return graph, make_inputs(case, graph, torch.float32), case


def test_bitwise_deterministic_across_runs_and_threads():
    graph, inputs, case = _large_problem()
    seed = torch.tensor(77)
    threads = torch.get_num_threads()
    results = []
    try:
        for num_threads in (1, 2, 2, 1):
            torch.set_num_threads(num_threads)
            results.append(run(fused.segment_attention_fused, graph, inputs, case, True, seed))
    finally:
        torch.set_num_threads(threads)
    first = results[0]
    for other in results[1:]:
        assert torch.equal(other[0], first[0])
        assert torch.equal(other[1], first[1])
        for a, b in zip(other[2], first[2]):
            assert torch.equal(a, b)


# Input validation ################################################################################

@pytest.fixture
def small():
    case = Case('small')
    graph = make_graph(case, torch.Generator().manual_seed(10))
    return graph, make_inputs(case, graph, torch.float32)


@pytest.mark.parametrize('field,index,value', [
    ('src', 3, 9), ('src', 0, -1), ('src', 5, 10**9), ('perm', 2, 40), ('perm', 1, -3),
])
def test_out_of_range_index_raises(small, field, index, value):
    graph, inputs = small
    bad = getattr(graph, field).clone()
    bad[index] = value
    with pytest.raises(IndexError):
        fused.segment_attention_fused(graph._replace(**{field: bad}), *inputs, SLOPE)


@pytest.mark.parametrize('field,index,value', [
    ('csc_dst', 3, 9), ('csc_dst', 0, -2), ('csc_slot', 4, 40), ('src_ptr', 2, 1000),
])
def test_out_of_range_index_raises_in_backward(small, field, index, value):
    graph, inputs = small
    bad = getattr(graph, field).clone()
    bad[index] = value
    leaves = [t.requires_grad_() for t in inputs]
    out, _ = fused.segment_attention_fused(graph._replace(**{field: bad}), *leaves, SLOPE)
    with pytest.raises(IndexError):
        out.sum().backward()


def test_bad_ptr_raises(small):
    graph, inputs = small
    for ptr in (graph.ptr.flip(0), graph.ptr - 1, graph.ptr * 2):
        with pytest.raises(IndexError):
            fused.segment_attention_fused(graph._replace(ptr=ptr.contiguous()), *inputs, SLOPE)


def test_shape_and_dtype_mismatches_raise(small):
    graph, (h, a_src, a_dst, a_edge) = small
    with pytest.raises(ValueError):
        fused.segment_attention_fused(graph, h, a_src[:-1], a_dst, a_edge, SLOPE)
    with pytest.raises(ValueError):
        fused.segment_attention_fused(graph, h, a_src, a_dst[:, :2], a_edge, SLOPE)
    with pytest.raises(ValueError):
        fused.segment_attention_fused(graph, h, a_src, a_dst, a_edge[1:], SLOPE)
    with pytest.raises(ValueError):
        fused.segment_attention_fused(graph, h[:, :, 0], a_src, a_dst, a_edge, SLOPE)
    with pytest.raises(ValueError):
        fused.segment_attention_fused(graph, h[1:], a_src[1:], a_dst, a_edge, SLOPE)
    with pytest.raises(TypeError):
        fused.segment_attention_fused(graph, h, a_src.double(), a_dst, a_edge, SLOPE)
    with pytest.raises(TypeError):
        fused.segment_attention_fused(graph, h.half(), a_src.half(), None, None, SLOPE)
    with pytest.raises(TypeError):
        fused.segment_attention_fused(graph._replace(perm=graph.perm.int()), h, a_src, a_dst,
                                      a_edge, SLOPE)
    with pytest.raises(TypeError):
        fused.segment_attention_fused(graph._replace(src=graph.src.float()), h, a_src, a_dst,
                                      a_edge, SLOPE)
    with pytest.raises(ValueError):
        fused.segment_attention_fused(graph, h, a_src, a_dst, a_edge, SLOPE, dropout=0.5)
    with pytest.raises(ValueError):
        fused.segment_attention_fused(graph, h, a_src, a_dst, a_edge, SLOPE, dropout=1.5,
                                      seed=torch.tensor(1))


def test_cpp_entry_validates_too(small):
    """Bypassing the Python checks, the C++ entry still refuses bad shapes and dtypes."""
    graph, (h, a_src, a_dst, a_edge) = small
    index = (graph.ptr, graph.src, graph.perm, graph.src_ptr, graph.csc_dst, graph.csc_slot)
    op = torch.ops.gat_pyg.segment_attention_fwd
    with pytest.raises((ValueError, RuntimeError)):
        op(*index, h, a_src[:-1], a_dst, a_edge, SLOPE, 0.0, None, False, False)
    with pytest.raises((TypeError, RuntimeError)):
        op(*index, h, a_src.double(), a_dst, a_edge, SLOPE, 0.0, None, False, False)
    with pytest.raises((ValueError, RuntimeError)):
        op(*index, h, a_src, a_dst, a_edge, SLOPE, 0.5, None, False, False)
    with pytest.raises((ValueError, RuntimeError)):
        op(index[0], index[1][:-1], *index[2:], h, a_src, a_dst, a_edge, SLOPE, 0.0, None,
           False, False)
    with pytest.raises((ValueError, RuntimeError)):
        op(*index, h.transpose(0, 1), a_src, a_dst, a_edge, SLOPE, 0.0, None, False, False)
    with pytest.raises(ValueError, match='rows of .h. must be contiguous'):
        op(*index, h.transpose(1, 2).contiguous().transpose(1, 2), a_src, a_dst, a_edge, SLOPE,
           0.0, None, False, False)


def test_non_contiguous_inputs_are_accepted(small):
    graph, (h, a_src, a_dst, a_edge) = small
    h_nc = h.transpose(1, 2).contiguous().transpose(1, 2)
    a_src_nc = a_src.t().contiguous().t()
    assert not h_nc.is_contiguous() and not a_src_nc.is_contiguous()
    expected, _ = fused.segment_attention_fused(graph, h, a_src, a_dst, a_edge, SLOPE)
    actual, _ = fused.segment_attention_fused(graph, h_nc, a_src_nc, a_dst, a_edge, SLOPE)
    assert torch.equal(actual, expected)


def test_column_blocks_are_read_in_place(small):
    """h, a_src and a_dst as column blocks of one [N, H*C + 2H] product (as GATConv passes
    them): same bits as contiguous copies, forward and backward, with no copy of the blocks."""
    graph, (h, a_src, a_dst, a_edge) = small
    n, heads, channels = h.shape
    table = torch.cat([h.reshape(n, -1), a_src, a_dst], dim=1).requires_grad_()
    blocks = table.split([heads * channels, heads, heads], dim=1)
    h_view = blocks[0].view(n, heads, channels)
    assert not h_view.is_contiguous()
    assert fused._node_rows(h_view) is h_view and fused._node_rows(blocks[1]) is blocks[1]
    grad_out = torch.randn(graph.num_dst, heads, channels, generator=torch.Generator().manual_seed(5))
    out, _ = fused.segment_attention_fused(graph, h_view, blocks[1], blocks[2], a_edge, SLOPE)
    out.backward(grad_out)
    leaves = [t.clone().requires_grad_() for t in (h, a_src, a_dst)]
    expected, _ = fused.segment_attention_fused(graph, *leaves, a_edge, SLOPE)
    expected.backward(grad_out)
    assert torch.equal(out, expected)
    grads = table.grad.split([heads * channels, heads, heads], dim=1)
    assert torch.equal(grads[0].view(n, heads, channels), leaves[0].grad)
    assert torch.equal(grads[1], leaves[1].grad) and torch.equal(grads[2], leaves[2].grad)


def test_build_segment_graph_validates_and_supports_int32():
    src = torch.tensor([0, 1, 2, 2])
    dst = torch.tensor([1, 2, 0, 0])
    with pytest.raises(IndexError):
        build_segment_graph(src, dst, 2, 3)
    with pytest.raises(IndexError):
        build_segment_graph(src, torch.tensor([1, -1, 0, 0]), 3, 3)
    graph = build_segment_graph(src, dst, 3, 3, index_dtype=torch.int32)
    assert all(t.dtype == torch.int32 for t in graph[:6])
    wide = build_segment_graph(src, dst, 3, 3)
    for narrow_t, wide_t in zip(graph[:6], wide[:6]):
        assert torch.equal(narrow_t.long(), wide_t)


# Backend dispatch ################################################################################

def test_backend_switch(small, monkeypatch):
    graph, inputs = small
    calls = []
    monkeypatch.setattr(reference, 'segment_attention',
                        lambda *a, **k: calls.append('reference') or (None, None))
    with ops.use_backend('reference'):
        assert ops.get_backend() == 'reference'
        ops.segment_attention(graph, *inputs, SLOPE)
    assert calls == ['reference']
    with ops.use_backend('fused'):
        out, _ = ops.segment_attention(graph, *inputs, SLOPE)
        assert out is not None and calls == ['reference']
    with ops.use_backend('auto'):
        out, _ = ops.segment_attention(graph, *inputs, SLOPE)
        assert out is not None and calls == ['reference']
    with pytest.raises(ValueError):
        ops.set_backend('cuda')
    previous = ops.set_backend('reference')
    try:
        assert ops.get_backend() == 'reference'
    finally:
        ops.set_backend(previous)


def test_backend_from_environment():
    code = ('import gat_pyg.ops as o, warnings; print(o.get_backend())')
    env = dict(os.environ, GAT_PYG_BACKEND='reference')
    result = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == 'reference'


# End to end: the layer on both backends ##########################################################

@pytest.mark.parametrize('edge_dim', [None, 3])
def test_gat_conv_same_on_both_backends(edge_dim):
    from gat_pyg.nn import GATConv
    torch.manual_seed(0)
    n, e = 30, 120
    x = torch.randn(n, 6, dtype=torch.float64)
    edge_index = torch.randint(0, n, (2, e))
    edge_attr = torch.randn(e, 3, dtype=torch.float64) if edge_dim else None
    conv = GATConv(6, 4, heads=3, edge_dim=edge_dim, dropout=0.3).double()
    results = {}
    for backend in ('reference', 'fused'):
        conv.zero_grad()
        xb = x.clone().requires_grad_()
        with ops.use_backend(backend):
            torch.manual_seed(1)  # same dropout seed on both backends
            out, (_, alpha) = conv(xb, edge_index, edge_attr, return_attention_weights=True)
            (out.square().sum() + alpha.sum()).backward()
        results[backend] = (out, alpha, xb.grad,
                            {k: p.grad.clone() for k, p in conv.named_parameters()})
    ref, fus = results['reference'], results['fused']
    for a, b in zip(fus[:3], ref[:3]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    for name in ref[3]:
        torch.testing.assert_close(fus[3][name], ref[3][name], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('heads,concat,edge_dim,dropout,bipartite,loops', [
    (1, True, None, 0.0, False, True),
    (3, True, None, 0.0, False, True),
    (3, False, None, 0.0, False, True),
    (2, True, 2, 0.0, False, True),
    (2, False, 2, 0.0, False, False),
    (3, True, None, 0.4, False, True),
    (2, True, 2, 0.4, False, True),
    (2, True, None, 0.0, True, False),
    (2, False, 2, 0.3, True, False),
], ids=['h1', 'h3-concat', 'h3-mean', 'edge', 'edge-mean-noloops', 'dropout', 'edge-dropout',
        'bipartite', 'bipartite-edge-dropout-mean'])
def test_gat_conv_gradcheck_on_fused_path(heads, concat, edge_dim, dropout, bipartite, loops):
    """The whole layer on the fused kernel, float64 gradcheck with respect to the features,
    the edge features and every parameter (dropout: the same seed in every evaluation)."""
    from gat_pyg.nn import GATConv
    gen = torch.Generator().manual_seed(3)
    num_src, num_dst, e = 7, (5 if bipartite else 7), 24
    x_src = torch.randn(num_src, 4, generator=gen, dtype=torch.float64)
    x_dst = torch.randn(num_dst, 3, generator=gen, dtype=torch.float64) if bipartite else None
    edge_index = torch.stack([torch.randint(0, num_src, (e,), generator=gen),
                              torch.randint(0, num_dst, (e,), generator=gen)])
    edge_attr = torch.randn(e, edge_dim, generator=gen, dtype=torch.float64) if edge_dim else None
    torch.manual_seed(0)
    conv = GATConv((4, 3) if bipartite else 4, 3, heads=heads, concat=concat,
                   edge_dim=edge_dim, dropout=dropout, add_self_loops=loops).double().train()
    names = [name for name, _ in conv.named_parameters()]
    inputs = [x_src] + ([x_dst] if bipartite else []) + ([edge_attr] if edge_dim else [])
    leaves = [t.clone().requires_grad_() for t in inputs] + [
        p.detach().clone().requires_grad_() for p in conv.parameters()]

    def fn(*args):
        features, params = args[:len(inputs)], args[len(inputs):]
        xs = (features[0], features[1]) if bipartite else features[0]
        attr = features[-1] if edge_dim else None
        torch.manual_seed(7)  # the dropout seed: the same mask in every evaluation
        return torch.func.functional_call(conv, dict(zip(names, params)),
                                          (xs, edge_index, attr))

    with ops.use_backend('fused'):
        assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7)
