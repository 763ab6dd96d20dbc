"""Segment attention, both score families (additive: GAT; vector: GATv2), on every
implementation (the reference and each loaded kernel, on every device) against the float64
reference as the oracle; autograd (gradcheck); the torch.library contract (opcheck,
torch.compile); determinism; input validation; the backend choice."""
import os
import subprocess
import sys
import warnings
from typing import NamedTuple, Optional

import pytest
import torch
from torch import Tensor

from gat_pyg import ops
from gat_pyg.ops import GraphLayout, backends, build_segment_graph, reference
from gat_pyg.ops.graph import SegmentGraph
from implementations import KERNELS, REQUIRED_KERNELS, parametrize

SLOPE = 0.2
CPU_KERNEL = [impl for impl in KERNELS if impl.device == 'cpu']


class Case(NamedTuple):
    name: str
    family: str = 'additive'  # or 'vector'
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
    edge_dim: int = 3  # vector: edge features [E, edge_dim] projected by w_edge
    edge_term: bool = False  # vector: edge_attr is the edge term [E, H * C] (no w_edge)


ADDITIVE_CASES = [
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
VECTOR_CASES = [Case('v2_' + name, 'vector', **kwargs) for name, kwargs in (
    ('base', {}),
    ('one_head_one_channel', dict(heads=1, channels=1)),
    ('no_edge_features', dict(with_edge=False)),
    ('edge_term', dict(edge_term=True)),
    ('edge_dim_1', dict(edge_dim=1)),
    ('edge_dim_64', dict(edge_dim=64, heads=2, channels=4)),
    ('dropout', dict(dropout=0.3)),
    ('dropout_no_edge', dict(dropout=0.5, with_edge=False)),
    ('bipartite', dict(num_src=7, num_dst=11)),
    ('isolated_targets', dict(isolated=4)),
    ('duplicate_edges', dict(duplicates=True)),
    ('empty_graph', dict(num_edges=0)),
    ('int32_indices', dict(index_dtype=torch.int32, dropout=0.2)),
    ('many_heads_8_channels', dict(heads=9, channels=8, num_edges=30)),
    ('channels_16', dict(heads=2, channels=16)),
    ('channels_64', dict(heads=2, channels=64, num_edges=30)),
)]
CASES = ADDITIVE_CASES + VECTOR_CASES
IDS = [case.name for case in CASES]
FAMILY_CASES = {'additive': Case('small'), 'vector': Case('v2_small', 'vector')}


def attend(case: Case):
    """The dispatching entry of the case's family."""
    return ops.segment_attention if case.family == 'additive' else ops.segment_attention_v2


def reference_of(case: Case):
    return (reference.segment_attention if case.family == 'additive'
            else reference.segment_attention_v2)


def test_required_kernels_load():
    """Each kernel named in GAT_PYG_REQUIRE_KERNELS loads, so its tests really run."""
    status = ops.available_kernels()
    for device in REQUIRED_KERNELS:
        assert device in status, f'no kernel registered for {device!r}'
        assert status[device].loaded, status[device].reason
        assert any(impl.device == device for impl in KERNELS)
    if 'cpu' in REQUIRED_KERNELS:
        from gat_pyg.ops.cpu import build_directory
        assert os.path.isfile(os.path.join(build_directory(), 'gat_pyg_ops.so'))


def layout_of(impl) -> GraphLayout:
    return ops.graph_layout(torch.device(impl.device))


def make_graph(case: Case, generator: torch.Generator, device='cpu',
               layout: GraphLayout = GraphLayout()) -> SegmentGraph:
    num_dst = case.num_dst if case.num_dst is not None else case.num_src
    live = num_dst - case.isolated
    src = torch.randint(0, case.num_src, (case.num_edges,), generator=generator)
    dst = torch.randint(0, live, (case.num_edges,), generator=generator)
    if case.duplicates and case.num_edges >= 8:
        src[4:8] = src[0]
        dst[4:8] = dst[0]
    if case.index_dtype in layout.index_dtypes:  # else the implementation's own
        layout = layout._replace(index_dtypes=(case.index_dtype, ))
    return build_segment_graph(src.to(device), dst.to(device), case.num_src, num_dst, layout)


def make_inputs(case: Case, graph: SegmentGraph, dtype: torch.dtype, seed: int = 0,
                device='cpu'):
    """Random inputs, float32-exact, so that one set of numbers serves every dtype."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        values = torch.randn(*shape, generator=gen, dtype=torch.float64).float()
        return values.to(device=device, dtype=dtype)

    H, C = case.heads, case.channels
    if case.family == 'vector':  # x_l, x_r, att, edge_attr, w_edge
        x_l, x_r, att = rand(graph.num_src, H, C), rand(graph.num_dst, H, C), rand(H, C)
        if not case.with_edge:
            return x_l, x_r, att, None, None
        if case.edge_term:
            return x_l, x_r, att, rand(graph.num_edges, H * C), None
        return x_l, x_r, att, rand(graph.num_edges, case.edge_dim), rand(H * C, case.edge_dim)
    h = rand(graph.num_src, H, C)
    a_src = rand(graph.num_src, H)
    a_dst = rand(graph.num_dst, H) if case.with_dst else None
    a_edge = rand(graph.num_edges, H) if case.with_edge else None
    return h, a_src, a_dst, a_edge


def run(fn, graph, inputs, case: Case, return_alpha: bool, seed: Tensor):
    """Forward + backward of a random linear loss on out (and alpha); returns the output,
    the attention and the gradients of every input that is given."""
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in inputs]
    out, alpha = fn(graph, *leaves, SLOPE, case.dropout, seed, return_alpha)
    gen = torch.Generator().manual_seed(123)

    def weights(like):
        return torch.randn(like.shape, generator=gen, dtype=torch.float64).to(like)

    loss = (out * weights(out)).sum()
    if return_alpha:
        loss = loss + (alpha * weights(alpha)).sum()
    wrt = [t for t in leaves if t is not None]
    grads = (torch.autograd.grad(loss, wrt, allow_unused=True) if loss.requires_grad
             else [None] * len(wrt))
    grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, wrt)]
    return [out, alpha] + list(grads)


def assert_within_reference_error(draws, what):
    """Over the draws (each: results, float64 oracle, float32 reference), each result is
    within 1e-10 of the oracle (float64 results), or its largest error is no more than twice
    the float32 reference's largest error, plus one float32 rounding at the tensor's scale
    (float32 results; the reference's error can be 0 on a tiny graph). Over several draws,
    since on one draw the ratio of two float errors of the same size scatters around 1."""
    for index, name in enumerate(what):
        error = bound = rounding = 0.0
        for results, oracle, reference32 in draws:
            actual, exact = results[index], oracle[index]
            if exact is None:
                assert actual is None, name
                continue
            assert actual.shape == exact.shape, name
            if not exact.numel():
                continue
            actual = actual.detach().cpu().double()
            scale = max(1.0, exact.abs().max().item())
            error = max(error, (actual - exact).abs().max().item() / scale)
            if reference32 is not None:
                ref32 = reference32[index].double()
                bound = max(bound, 2 * (ref32 - exact).abs().max().item() / scale)
                rounding = torch.finfo(torch.float32).eps
        if draws[0][2] is None:  # float64
            assert error <= 1e-10, f'{name}: {error}'
        else:
            assert error <= bound + rounding, f'{name}: {error} > 2 x {bound / 2} (relative)'


# Independent graphs and inputs per case of test_matches_reference.
REFERENCE_DRAWS = 4

INPUT_NAMES = {'additive': ('h', 'a_src', 'a_dst', 'a_edge'),
               'vector': ('x_l', 'x_r', 'att', 'edge_attr', 'w_edge')}


def names_of(case: Case, inputs) -> list:
    """What :func:`run` returns: the output, the attention and the given inputs' gradients."""
    return ['out', 'alpha'] + [f'grad {name}' for name, t in
                               zip(INPUT_NAMES[case.family], inputs) if t is not None]


@parametrize()
@pytest.mark.parametrize('return_alpha', [False, True])
@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_matches_reference(impl, case, return_alpha):
    seed = torch.tensor(987654321987, dtype=torch.long)
    draws = {torch.float64: [], torch.float32: []}
    for draw in range(REFERENCE_DRAWS):
        graph = make_graph(case, torch.Generator().manual_seed(1 + draw), impl.device,
                           layout_of(impl))
        cpu_graph = make_graph(case, torch.Generator().manual_seed(1 + draw))
        oracle = run(reference_of(case), cpu_graph,
                     make_inputs(case, cpu_graph, torch.float64, seed=draw), case,
                     return_alpha, seed)
        reference32 = run(reference_of(case), cpu_graph,
                          make_inputs(case, cpu_graph, torch.float32, seed=draw), case,
                          return_alpha, seed)
        for dtype in (torch.float64, torch.float32):
            inputs = make_inputs(case, graph, dtype, seed=draw, device=impl.device)
            results = run(attend(case), graph, inputs, case, return_alpha, seed)
            assert results[0].dtype == dtype and results[0].device.type == impl.device
            if return_alpha:
                assert results[1].shape == (graph.num_edges, case.heads)
            else:
                assert results[1] is None
            draws[dtype].append((results, oracle,
                                 None if dtype == torch.float64 else reference32))
    for dtype, runs in draws.items():
        assert_within_reference_error(runs, names_of(case, inputs))


@parametrize()
@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_gradcheck(impl, case):
    graph = make_graph(case, torch.Generator().manual_seed(2), impl.device, layout_of(impl))
    inputs = make_inputs(case, graph, torch.float64, seed=3, device=impl.device)
    given = [i for i, t in enumerate(inputs) if t is not None]
    seed = torch.tensor(42, dtype=torch.long)
    return_alpha = case.num_edges > 0

    def fn(*args):
        full = [None] * len(inputs)
        for i, t in zip(given, args):
            full[i] = t
        out, alpha = attend(case)(graph, *full, SLOPE, case.dropout, seed, return_alpha)
        return (out, alpha) if return_alpha else out

    leaves = [inputs[i].clone().requires_grad_() for i in given]
    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7)


FAMILIES = pytest.mark.parametrize('family', ['additive', 'vector'])


@parametrize(KERNELS)
@FAMILIES
def test_dropout_matches_reference_hash_bit_for_bit(impl, family):
    """The kernel drops exactly the entries of reference.dropout_hash, for seeds with any
    high bits (negative ones included)."""
    case = Case('hash', family, num_src=30, num_edges=400, heads=4, channels=2)
    graph = make_graph(case, torch.Generator().manual_seed(4), impl.device, layout_of(impl))
    inputs = make_inputs(case, graph, torch.float64, device=impl.device)
    for value in (0, 1, 2**32 + 5, 2**62 + 12345, -1, -(2**40) - 7):
        seed = torch.tensor(value, dtype=torch.long)
        for p in (0.1, 0.5, 0.9):
            _, alpha = attend(case)(graph, *inputs, SLOPE, p, seed, return_alpha=True)
            keep = reference.dropout_hash(seed, torch.arange(graph.num_edges), 4) >= \
                reference.dropout_threshold(p)
            assert torch.equal(alpha.cpu() != 0, keep)


@parametrize()
@FAMILIES
def test_dropout_one_drops_everything(impl, family):
    case = Case('p1', family)
    graph = make_graph(case, torch.Generator().manual_seed(5), impl.device, layout_of(impl))
    inputs = [t.requires_grad_() for t in make_inputs(case, graph, torch.float64,
                                                      device=impl.device)]
    out, alpha = attend(case)(graph, *inputs, SLOPE, 1.0, torch.tensor(3), return_alpha=True)
    assert not out.any() and not alpha.any()
    out.sum().backward()
    assert all(t.grad is None or not t.grad.any() for t in inputs)


@parametrize(KERNELS)
@FAMILIES
def test_bfloat16_close_to_float32(impl, family):
    case = Case('bf16', family, num_src=20, num_edges=120, heads=2, channels=8)
    graph = make_graph(case, torch.Generator().manual_seed(6), impl.device, layout_of(impl))
    cpu_graph = make_graph(case, torch.Generator().manual_seed(6))
    inputs = make_inputs(case, graph, torch.bfloat16, device=impl.device)
    results = run(attend(case), graph, inputs, case, True, torch.tensor(0))
    wide = [t.cpu().double() for t in inputs]
    expected = run(reference_of(case), cpu_graph, wide, case, True, torch.tensor(0))
    assert results[0].dtype == torch.bfloat16
    for actual, exact in zip(results, expected):
        scale = max(1.0, exact.abs().max().item()) if exact.numel() else 1.0
        torch.testing.assert_close(actual.cpu().double(), exact, rtol=5e-2, atol=5e-2 * scale)


# torch.library contract ##########################################################################

def _op_args(impl, case: Case, return_alpha: bool, requires_grad: bool = True):
    graph = make_graph(case, torch.Generator().manual_seed(7), impl.device, layout_of(impl))
    tensors = list(make_inputs(case, graph, torch.float64, device=impl.device))
    if requires_grad:
        tensors = [t.requires_grad_() if t is not None else None for t in tensors]
    seed = torch.tensor(11) if case.dropout > 0 else None
    tail = (case.with_dst, ) if case.family == 'additive' else ()
    return (*graph[:6], *tensors, SLOPE, case.dropout, seed, return_alpha, *tail)


OPCHECK_CASES = [
    (Case('opcheck'), True),
    (Case('opcheck_dropout', dropout=0.4, with_edge=False), False),
    (Case('opcheck_src_only', with_dst=False, with_edge=False, index_dtype=torch.int32), True),
    (Case('opcheck_v2', 'vector'), True),
    (Case('opcheck_v2_dropout_term', 'vector', dropout=0.4, edge_term=True), False),
    (Case('opcheck_v2_no_edge_int32', 'vector', with_edge=False, index_dtype=torch.int32),
     True),
]


@parametrize(KERNELS)
@pytest.mark.parametrize('case,return_alpha', OPCHECK_CASES,
                         ids=[case.name for case, _ in OPCHECK_CASES])
def test_opcheck_forward(impl, case, return_alpha):
    op = (torch.ops.gat_pyg.segment_attention_fwd if case.family == 'additive' else
          torch.ops.gat_pyg.segment_attention_v2_fwd)
    torch.library.opcheck(op.default, _op_args(impl, case, return_alpha))


@parametrize(KERNELS)
def test_opcheck_backward(impl):
    args = _op_args(impl, Case('opcheck_bwd', dropout=0.3), True, requires_grad=False)
    out, lse, alpha, out_slope, slope_sum = torch.ops.gat_pyg.segment_attention_fwd(*args)
    ptr, src, perm, src_ptr, csc_dst, csc_slot, h, a_src, a_dst, a_edge = args[:10]
    grad_out = torch.randn_like(out)
    grad_alpha = torch.randn_like(alpha)
    torch.library.opcheck(torch.ops.gat_pyg.segment_attention_bwd.default, (
        grad_out, grad_alpha, ptr, src, perm, src_ptr, csc_dst, csc_slot, h, a_src, a_dst,
        a_edge, out, lse, out_slope, slope_sum, SLOPE, 0.3, args[12],
        [True, True, True, True]))


@parametrize(KERNELS)
@pytest.mark.parametrize('edge_term', [False, True])
def test_opcheck_backward_v2(impl, edge_term):
    args = _op_args(impl, Case('opcheck_bwd_v2', 'vector', dropout=0.3, edge_term=edge_term),
                    True, requires_grad=False)
    out, lse, alpha = torch.ops.gat_pyg.segment_attention_v2_fwd(*args)
    grad_out, grad_alpha = torch.randn_like(out), torch.randn_like(alpha)
    torch.library.opcheck(torch.ops.gat_pyg.segment_attention_v2_bwd.default, (
        grad_out, grad_alpha, *args[:11], out, lse, SLOPE, 0.3, args[13],
        [True, True, True, True, not edge_term]))


@parametrize()
@FAMILIES
def test_torch_compile_fullgraph(impl, family):
    torch._dynamo.reset()
    case = Case('compile', family, num_src=12, num_edges=60, heads=2, channels=4,
                dropout=0.25)
    graph = make_graph(case, torch.Generator().manual_seed(8), impl.device, layout_of(impl))
    inputs = make_inputs(case, graph, torch.float32, device=impl.device)
    seed = torch.tensor(5)

    def fn(graph, inputs, seed):
        out, alpha = attend(case)(graph, *inputs, SLOPE, 0.25, seed, return_alpha=True)
        return (out.sum(-1) * 2.0).sum() + (alpha * alpha).sum()

    compiled = torch.compile(fn, fullgraph=True)
    eager_leaves = [t.clone().requires_grad_() for t in inputs]
    compiled_leaves = [t.clone().requires_grad_() for t in inputs]
    expected = fn(graph, eager_leaves, seed)
    actual = compiled(graph, compiled_leaves, seed)
    expected.backward()
    actual.backward()
    torch.testing.assert_close(actual, expected)
    for a, b in zip(compiled_leaves, eager_leaves):
        torch.testing.assert_close(a.grad, b.grad)


# Determinism #####################################################################################

def _large_problem(impl, family):
    gen = torch.Generator().manual_seed(9)
    n = 3000
    # Skewed degrees: a few hubs receive and send many edges.
    src = torch.cat([torch.randint(0, n, (30000,), generator=gen),
                     torch.randint(0, 10, (5000,), generator=gen)])
    dst = torch.cat([torch.randint(0, n, (30000,), generator=gen),
                     torch.randint(0, n, (5000,), generator=gen)])
    dst[:3000] = 7
    graph = build_segment_graph(src.to(impl.device), dst.to(impl.device), n, n,
                                layout_of(impl))
    case = Case('large', family, num_src=n, num_edges=graph.num_edges, heads=4, channels=8,
                dropout=0.1)
    return graph, make_inputs(case, graph, torch.float32, device=impl.device), case


@parametrize(KERNELS)
@FAMILIES
def test_bitwise_deterministic_across_runs_and_threads(impl, family):
    graph, inputs, case = _large_problem(impl, family)
    seed = torch.tensor(77)
    threads = torch.get_num_threads()
    results = []
    try:
        for num_threads in (1, 2, 2, 1):
            torch.set_num_threads(num_threads)
            results.append(run(attend(case), graph, inputs, case, True, seed))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(other, results[0]):
            assert torch.equal(a, b)


# Input validation ################################################################################

def small_problem(impl, family: str):
    case = FAMILY_CASES[family]
    graph = make_graph(case, torch.Generator().manual_seed(10), impl.device, layout_of(impl))
    return graph, make_inputs(case, graph, torch.float32, device=impl.device)


@pytest.fixture
def small(impl):
    return small_problem(impl, 'additive')


@parametrize(KERNELS)
@FAMILIES
@pytest.mark.parametrize('field,index,value', [
    ('src', 3, 9), ('src', 0, -1), ('src', 5, 10**9), ('perm', 2, 40), ('perm', 1, -3),
])
def test_out_of_range_index_raises(impl, family, field, index, value):
    graph, inputs = small_problem(impl, family)
    bad = getattr(graph, field).clone()
    bad[index] = value
    with pytest.raises(IndexError):
        attend(FAMILY_CASES[family])(graph._replace(**{field: bad}), *inputs, SLOPE)


@parametrize(KERNELS)
@FAMILIES
@pytest.mark.parametrize('field,index,value', [
    ('csc_dst', 3, 9), ('csc_dst', 0, -2), ('csc_slot', 4, 40), ('src_ptr', 2, 1000),
])
def test_out_of_range_index_raises_in_backward(impl, family, field, index, value):
    graph, inputs = small_problem(impl, family)
    bad = getattr(graph, field).clone()
    bad[index] = value
    leaves = [t.requires_grad_() for t in inputs if t is not None]
    out, _ = attend(FAMILY_CASES[family])(graph._replace(**{field: bad}), *leaves, SLOPE)
    with pytest.raises(IndexError):
        out.sum().backward()


@parametrize(KERNELS)
@FAMILIES
def test_bad_ptr_raises(impl, family):
    graph, inputs = small_problem(impl, family)
    for ptr in (graph.ptr.flip(0), graph.ptr - 1, graph.ptr * 2):
        with pytest.raises(IndexError):
            attend(FAMILY_CASES[family])(graph._replace(ptr=ptr.contiguous()), *inputs, SLOPE)


@parametrize(KERNELS)
def test_shape_dtype_and_device_mismatches_raise(impl, small):
    graph, (h, a_src, a_dst, a_edge) = small
    attend = ops.segment_attention
    for args in ((graph, h, a_src[:-1], a_dst, a_edge), (graph, h, a_src, a_dst[:, :2], a_edge),
                 (graph, h, a_src, a_dst, a_edge[1:]), (graph, h[:, :, 0], a_src, a_dst, a_edge),
                 (graph, h[1:], a_src[1:], a_dst, a_edge)):
        with pytest.raises(ValueError):
            attend(*args, SLOPE)
    with pytest.raises(TypeError):
        attend(graph, h, a_src.double(), a_dst, a_edge, SLOPE)
    with pytest.raises(TypeError):
        attend(graph, h.half(), a_src.half(), None, None, SLOPE)
    wrong_dtype = torch.int64 if graph.index_dtype == torch.int32 else torch.int32
    with pytest.raises(TypeError):
        attend(graph._replace(perm=graph.perm.to(wrong_dtype)), h, a_src, a_dst, a_edge, SLOPE)
    with pytest.raises(TypeError):
        attend(graph._replace(src=graph.src.float()), h, a_src, a_dst, a_edge, SLOPE)
    with pytest.raises(ValueError, match='needs a seed'):
        attend(graph, h, a_src, a_dst, a_edge, SLOPE, dropout=0.5)
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        attend(graph, h, a_src, a_dst, a_edge, SLOPE, dropout=1.5, seed=torch.tensor(1))
    with pytest.raises(ValueError, match="CSC"):
        attend(graph._replace(src_ptr=None, csc_dst=None, csc_slot=None), h, a_src, a_dst,
               a_edge, SLOPE)
    with pytest.raises(ValueError, match="'a_src' is on meta"):
        attend(graph, h, a_src.to('meta'), a_dst, a_edge, SLOPE)


@parametrize(KERNELS)
def test_vector_shape_dtype_and_device_mismatches_raise(impl):
    graph, (x_l, x_r, att, edge_attr, w_edge) = small_problem(impl, 'vector')
    attend_v2 = ops.segment_attention_v2
    for args, match in (((x_l, x_r[1:], att, edge_attr, w_edge), "'x_r' must have shape"),
                        ((x_l, x_r, att[:, :2], edge_attr, w_edge), "'att' must have shape"),
                        ((x_l, x_r, att, edge_attr[1:], w_edge), "'edge_attr' must have"),
                        ((x_l, x_r, att, edge_attr, w_edge[:, :2]), "'w_edge' must have"),
                        ((x_l, x_r, att, edge_attr, None), 'without .w_edge.'),
                        ((x_l, x_r, att, None, w_edge), 'without .edge_attr.'),
                        ((x_l[1:], x_r, att, edge_attr, w_edge), "'x_l' has 8 rows"),
                        ((x_l[..., 0], x_r, att, edge_attr, w_edge), "'x_l' must be")):
        with pytest.raises(ValueError, match=match):
            attend_v2(graph, *args, SLOPE)
    with pytest.raises(TypeError, match="'x_r' has dtype"):
        attend_v2(graph, x_l, x_r.double(), att, edge_attr, w_edge, SLOPE)
    with pytest.raises(TypeError):
        attend_v2(graph, x_l.half(), x_r.half(), att.half(), None, None, SLOPE)
    with pytest.raises(ValueError, match="'att' is on meta"):
        attend_v2(graph, x_l, x_r, att.to('meta'), edge_attr, w_edge, SLOPE)
    with pytest.raises(ValueError, match='needs a seed'):
        attend_v2(graph, x_l, x_r, att, edge_attr, w_edge, SLOPE, dropout=0.5)


@parametrize(CPU_KERNEL)
def test_cpp_entry_validates_too(impl, small):
    """Bypassing the Python checks, the C++ entry still refuses bad shapes and dtypes."""
    graph, (h, a_src, a_dst, a_edge) = small
    index = graph[:6]
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


@parametrize(KERNELS)
def test_non_contiguous_inputs_are_accepted(impl, small):
    graph, (h, a_src, a_dst, a_edge) = small
    h_nc = h.transpose(1, 2).contiguous().transpose(1, 2)
    a_src_nc = a_src.t().contiguous().t()
    assert not h_nc.is_contiguous() and not a_src_nc.is_contiguous()
    expected, _ = ops.segment_attention(graph, h, a_src, a_dst, a_edge, SLOPE)
    actual, _ = ops.segment_attention(graph, h_nc, a_src_nc, a_dst, a_edge, SLOPE)
    assert torch.equal(actual, expected)


@parametrize(KERNELS)
def test_column_blocks_are_read_in_place(impl, small):
    """h, a_src and a_dst as column blocks of one [N, H*C + 2H] product (as GATConv passes
    them): same bits as contiguous copies, forward and backward, with no copy of the blocks."""
    from gat_pyg.ops._library import node_rows
    graph, (h, a_src, a_dst, a_edge) = small
    n, heads, channels = h.shape
    table = torch.cat([h.reshape(n, -1), a_src, a_dst], dim=1).requires_grad_()
    blocks = table.split([heads * channels, heads, heads], dim=1)
    h_view = blocks[0].view(n, heads, channels)
    assert not h_view.is_contiguous()
    assert node_rows(h_view) is h_view and node_rows(blocks[1]) is blocks[1]
    grad_out = torch.randn(graph.num_dst, heads, channels,
                           generator=torch.Generator().manual_seed(5)).to(h.device)
    out, _ = ops.segment_attention(graph, h_view, blocks[1], blocks[2], a_edge, SLOPE)
    out.backward(grad_out)
    leaves = [t.clone().requires_grad_() for t in (h, a_src, a_dst)]
    expected, _ = ops.segment_attention(graph, *leaves, a_edge, SLOPE)
    expected.backward(grad_out)
    assert torch.equal(out, expected)
    grads = table.grad.split([heads * channels, heads, heads], dim=1)
    assert torch.equal(grads[0].view(n, heads, channels), leaves[0].grad)
    assert torch.equal(grads[1], leaves[1].grad) and torch.equal(grads[2], leaves[2].grad)


# Backends and kernels ###########################################################################

def test_backend_choice(monkeypatch):
    """'reference' never calls a kernel, 'kernel' and its old name 'fused' always do (on a
    device with one), 'auto' does where the kernel loads; unknown names are refused."""
    case = Case('dispatch')
    graph = make_graph(case, torch.Generator().manual_seed(11))
    inputs = make_inputs(case, graph, torch.float32)
    calls = []
    monkeypatch.setattr(reference, 'segment_attention',
                        lambda *a, **k: calls.append('reference') or (None, None))
    with ops.use_backend('reference'):
        assert ops.get_backend() == 'reference'
        assert ops.graph_layout('cpu') == backends.REFERENCE_LAYOUT
        ops.segment_attention(graph, *inputs, SLOPE)
    assert calls == ['reference']
    if CPU_KERNEL:
        for name in ('kernel', 'fused', 'auto'):
            with ops.use_backend(name):
                assert ops.get_backend() == ('kernel' if name == 'fused' else name)
                assert ops.graph_layout('cpu') == ops.cpu.KERNEL.layout
                out, _ = ops.segment_attention(graph, *inputs, SLOPE)
                assert out is not None and calls == ['reference']
    with pytest.raises(ValueError, match='unknown segment-attention backend'):
        ops.set_backend('cuda')
    previous = ops.set_backend('reference')
    try:
        assert ops.get_backend() == 'reference'
    finally:
        ops.set_backend(previous)


def test_backend_from_environment():
    code = 'import gat_pyg.ops as o; print(o.get_backend())'
    for value, expected in (('reference', 'reference'), ('fused', 'kernel'),
                            ('KERNEL', 'kernel'), ('', 'auto')):
        env = dict(os.environ, GAT_PYG_BACKEND=value)
        result = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True,
                                text=True, check=True)
        assert result.stdout.strip() == expected
    result = subprocess.run([sys.executable, '-c', code],
                            env=dict(os.environ, GAT_PYG_BACKEND='gpu'), capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == 'auto' and "'gpu' is not one of" in result.stderr


@pytest.fixture
def broken_kernel(monkeypatch):
    """A CPU kernel that fails to load, registered in place of the real one for the test."""
    def load():
        raise RuntimeError('no compiler here')
    kernel = ops.Kernel('broken', 'cpu', load)
    monkeypatch.setattr(backends, '_kernels', {'cpu': kernel})
    monkeypatch.setattr(backends, '_choices', {})
    monkeypatch.setattr(backends, '_warned', set())
    return kernel


def test_kernel_that_fails_to_load_falls_back_with_one_warning(broken_kernel):
    case = Case('fallback')
    graph = make_graph(case, torch.Generator().manual_seed(12))
    inputs = make_inputs(case, graph, torch.float64)
    expected, _ = reference.segment_attention(graph, *inputs, SLOPE)
    with ops.use_backend('auto'):
        with pytest.warns(RuntimeWarning, match='broken segment-attention kernel could not '
                          'be loaded.*no compiler here'):
            out, _ = ops.segment_attention(graph, *inputs, SLOPE)
        torch.testing.assert_close(out, expected)
        assert ops.graph_layout('cpu') == backends.REFERENCE_LAYOUT
        with warnings.catch_warnings():
            warnings.simplefilter('error')  # once only
            ops.segment_attention(graph, *inputs, SLOPE)
    with ops.use_backend('kernel'):
        with pytest.raises(RuntimeError, match='no compiler here'):
            ops.segment_attention(graph, *inputs, SLOPE)
    status = ops.available_kernels()
    assert status == {'cpu': ops.KernelStatus('broken', False, True,
                                              'RuntimeError: no compiler here')}


def test_device_without_kernel(monkeypatch):
    """A device type with no kernel runs the reference under 'auto' and raises under
    'kernel'."""
    monkeypatch.setattr(backends, '_choices', {})
    with ops.use_backend('auto'):
        assert not ops.backends.uses_kernel('xpu')
        assert ops.graph_layout('xpu') == backends.REFERENCE_LAYOUT
    with ops.use_backend('kernel'):
        with pytest.raises(RuntimeError, match="no segment-attention kernel for device type "
                           "'xpu'"):
            ops.backends.uses_kernel('xpu')


def test_kernel_not_for_auto_is_opt_in(monkeypatch):
    kernel = ops.Kernel('opt-in', 'cpu', lambda: None, auto=False)
    monkeypatch.setattr(backends, '_kernels', {'cpu': kernel})
    monkeypatch.setattr(backends, '_choices', {})
    with ops.use_backend('auto'):
        assert not ops.backends.uses_kernel('cpu')
    with ops.use_backend('kernel'):
        assert ops.backends.uses_kernel('cpu')
    assert ops.available_kernels()['cpu'] == ops.KernelStatus('opt-in', True, False, None)


@parametrize(CPU_KERNEL)
def test_kernel_entry_runs_whatever_the_backend(impl, small):
    graph, inputs = small
    with ops.use_backend('reference'):
        out, _ = ops.cpu.segment_attention(graph, *inputs, SLOPE)
    with ops.use_backend('kernel'):
        expected, _ = ops.segment_attention(graph, *inputs, SLOPE)
    assert torch.equal(out, expected)
    with pytest.raises(ValueError, match='runs on cpu tensors'):
        ops.cpu.segment_attention(graph, inputs[0].to('meta'), *inputs[1:], SLOPE)
