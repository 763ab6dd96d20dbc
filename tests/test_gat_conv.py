"""Parity of :class:`gat_pyg.nn.GATConv` with :class:`torch_geometric.nn.GATConv`.

The grid builds PyG's layer and ours with the same constructor arguments, copies the
weights, runs both in eval mode with ``return_attention_weights=True`` and compares
outputs, the returned adjacency (form, type and indices), the attention weights and the
gradients of every input and parameter. Everything else (dropout, bad input, compile,
explainers, ``to_hetero``, lazy shapes, ``flow``) follows the grid.
"""
import dataclasses
import os
import random
import re
import warnings
import zlib
from typing import Dict, List, Optional, Tuple

import pytest
import torch
import torch_geometric.typing
from torch import Tensor
from torch_geometric import EdgeIndex
from torch_geometric.nn import GATConv as PyGGATConv
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.typing import SparseTensor
from torch_geometric.utils import to_torch_coo_tensor, to_torch_csr_tensor

from gat_pyg import ops
from gat_pyg.nn import GATConv
from implementations import IMPLEMENTATIONS, parametrize

WITH_TORCH_SPARSE = torch_geometric.typing.WITH_TORCH_SPARSE
WITH_TORCH_SCATTER = torch_geometric.typing.WITH_TORCH_SCATTER
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}

# The grid ####################################################################

FORMS = ['long', 'int32', 'ei_sorted', 'ei_unsorted', 'coo', 'csr'] + (
    ['sparse_tensor'] if WITH_TORCH_SPARSE else [])  # collected only where installed
SPARSE_FORMS = ('coo', 'csr', 'sparse_tensor')
# Edge features: none, edge_dim=1 as [E] and as [E, 1], edge_dim=4.
EDGES = ['none', 'd1_1d', 'd1_2d', 'd4']
# Node features: one tensor, (x, x) and (x, None) to a non-bipartite layer, and a
# bipartite layer (tuple in_channels) given (x_src, x_dst) or (x_src, None).
INPUTS = ['x', 'pair', 'pair_none', 'bip', 'bip_none']
FILLS = ['mean', 'add', 'min', 'max', 'mul', 'float', 'tensor']
GRAPHS = ['random', 'isolated', 'dups', 'loops', 'empty']
EDGE_DIM = {'none': None, 'd1_1d': 1, 'd1_2d': 1, 'd4': 4}

N_SRC, N_DST_BIP, NUM_EDGES = 12, 8, 40
F_SRC, F_DST = 5, 3


@dataclasses.dataclass(frozen=True)
class Config:
    form: str
    edge: str
    loops: bool
    inputs: str
    heads: int = 3
    concat: bool = True
    fill: str = 'mean'
    residual: bool = False
    bias: bool = True
    graph: str = 'random'
    dtype: str = 'float64'
    hooked: bool = False  # a message hook forces our layer onto PyG's `propagate`

    @property
    def id(self) -> str:
        return '-'.join([
            self.form, self.edge, 'loops' if self.loops else 'noloops', self.inputs,
            f'h{self.heads}', 'cat' if self.concat else 'mean', self.fill,
            'res' if self.residual else 'nores', 'bias' if self.bias else 'nobias',
            self.graph, self.dtype
        ] + (['hooked'] if self.hooked else []))

    @property
    def key(self) -> str:
        """Seeds the data: the same graph, features and weights in both dtypes."""
        return self.id.replace(self.dtype, 'dtype')

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def bipartite(self) -> bool:
        return self.inputs in ('bip', 'bip_none')

    def pyg_raises(self) -> Optional[type]:
        """The exception PyG's layer raises for this configuration (ours must match)."""
        if (self.form == 'sparse_tensor' and self.loops
                and EDGE_DIM[self.edge] is not None):
            return NotImplementedError  # SparseTensor + edge_dim + add_self_loops
        if self.attention_only_error():
            return RuntimeError
        return None

    def attention_only_error(self) -> bool:
        """A COO adjacency with multi-dimensional values (the edge features) cannot hold
        the attention weights (``set_sparse_value`` keeps the feature dimension in the
        size): ``return_attention_weights=True`` raises, the plain forward works. (CSR does
        not check, and returns a CSR tensor of size ``[N, N, D, H]`` in both layers.)"""
        return self.form == 'coo' and self.loops and self.edge in ('d1_2d', 'd4')


def _cycled(key: str, **fixed) -> Config:
    """A config whose remaining dimensions are drawn from a generator seeded by ``key``,
    so the grid (and its ids) is the same in every run."""
    rng = random.Random(key)
    dims = dict(heads=rng.choice([1, 3]), concat=rng.choice([True, False]),
                fill=rng.choice(FILLS), residual=rng.choice([True, False]),
                bias=rng.choice([True, False]), graph=rng.choice(GRAPHS),
                dtype=rng.choice(['float64', 'float64', 'float32']),
                hooked=rng.random() < 0.15)
    dims.update(fixed)
    return Config(**dims)


def _grid() -> List[Config]:
    configs: Dict[str, Config] = {}

    def add(cfg: Config) -> None:
        configs.setdefault(cfg.id, cfg)

    # 1. Every form x edge-feature kind x self-loop policy x input kind.
    for form in FORMS:
        for edge in EDGES:
            for loops in (True, False):
                for inputs in INPUTS:
                    add(_cycled(f'main/{form}/{edge}/{loops}/{inputs}', form=form,
                                edge=edge, loops=loops, inputs=inputs))
    # 2. Every fill_value with every edge-feature kind, for index forms that carry
    #    edge_attr, with self-loops (where fill_value matters), both dtypes.
    for fill in FILLS:
        for edge in ('d1_1d', 'd1_2d', 'd4'):
            for form in ('long', 'int32', 'ei_unsorted', 'coo'):
                for dtype in ('float64', 'float32'):
                    add(_cycled(f'fill/{fill}/{edge}/{form}/{dtype}', fill=fill,
                                edge=edge, form=form, loops=True, inputs='x',
                                dtype=dtype, graph='loops' if dtype == 'float32'
                                else 'dups'))
    # 3. Every graph kind with every form, heads, concat, residual and bias.
    for graph in GRAPHS:
        for form in FORMS:
            for heads, concat, residual, bias in ((1, True, True, False),
                                                  (3, False, False, True),
                                                  (3, True, True, True)):
                add(_cycled(f'graph/{graph}/{form}/{heads}/{concat}', graph=graph,
                            form=form, heads=heads, concat=concat, residual=residual,
                            bias=bias, loops=heads == 3, edge='d4' if concat else 'none',
                            inputs='bip' if residual and not bias else 'x'))
    return list(configs.values())


GRID = _grid()

# Inputs ######################################################################


def _generator(key: str) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(key.encode()))


def _float32_exact(values: Tensor, dtype: torch.dtype) -> Tensor:
    """``values`` rounded to float32, in ``dtype``: the float32 and float64 versions of a
    config hold the same numbers, so float64 can serve as the exact result of float32."""
    return values.float().to(dtype)


def _random_graph(kind: str, num_src: int, num_dst: int,
                  gen: torch.Generator) -> Tensor:
    """A random ``[2, E]`` graph: ``isolated`` leaves half the targets without incoming
    edges, ``dups`` repeats edges, ``loops`` has existing self-loops, ``empty`` no edges."""
    if kind == 'empty':
        return torch.empty(2, 0, dtype=torch.long)
    src = torch.randint(0, num_src, (NUM_EDGES, ), generator=gen)
    high = num_dst // 2 if kind == 'isolated' else num_dst
    dst = torch.randint(0, high, (NUM_EDGES, ), generator=gen)
    edge_index = torch.stack([src, dst])
    if kind == 'dups':
        edge_index = torch.cat([edge_index, edge_index[:, :12]], dim=1)
    elif kind == 'loops':
        loop = torch.arange(0, min(num_src, num_dst), 2).repeat(2, 1)
        edge_index = torch.cat([edge_index, loop], dim=1)
    return edge_index[:, torch.randperm(edge_index.size(1), generator=gen)]


@dataclasses.dataclass
class Inputs:
    x: object  # what the layer gets: a tensor or a pair
    edge_index: object  # what the layer gets
    edge_attr: Optional[Tensor]  # what the layer gets
    leaves: Dict[str, Tensor]  # every input that takes a gradient


def make_inputs(cfg: Config, form: Optional[str] = None, device: str = 'cpu') -> Inputs:
    """The inputs of ``cfg``, with ``edge_index`` in ``form`` (default ``cfg.form``), on
    ``device``; the same graph and features in every form and on every device."""
    form = form or cfg.form
    gen = _generator(cfg.key)
    dtype = cfg.torch_dtype
    num_dst = N_DST_BIP if cfg.inputs == 'bip' else N_SRC

    def leaf(*shape: int) -> Tensor:
        return _float32_exact(torch.randn(*shape, generator=gen, dtype=torch.float64),
                              dtype).to(device).requires_grad_()

    leaves: Dict[str, Tensor] = {}
    leaves['x'] = leaf(N_SRC, F_SRC)
    if cfg.inputs == 'x':
        x: object = leaves['x']
    elif cfg.inputs == 'pair':
        x = (leaves['x'], leaves['x'])
    elif cfg.inputs in ('pair_none', 'bip_none'):
        x = (leaves['x'], None)
    else:
        leaves['x_dst'] = leaf(N_DST_BIP, F_DST)
        x = (leaves['x'], leaves['x_dst'])

    edge_index = _random_graph(cfg.graph, N_SRC, num_dst, gen).to(device)
    num_edges = edge_index.size(1)
    edge_dim = EDGE_DIM[cfg.edge]

    def features(count: int) -> Optional[Tensor]:
        if edge_dim is None:
            return None
        leaves['edge_attr'] = leaf(count) if cfg.edge == 'd1_1d' else leaf(count, edge_dim)
        return leaves['edge_attr']

    # Whatever the form draws must not change the draws of others: fix the generator.
    weight = _float32_exact(torch.rand(num_edges, generator=gen, dtype=torch.float64),
                            dtype).to(device) + 0.5
    gen_state = gen.get_state()

    if form == 'long':
        return Inputs(x, edge_index, features(num_edges), leaves)
    if form == 'int32':
        return Inputs(x, edge_index.int(), features(num_edges), leaves)
    if form in ('ei_sorted', 'ei_unsorted'):
        ei = EdgeIndex(edge_index, sparse_size=(N_SRC, num_dst))
        attr = features(num_edges)
        if form == 'ei_sorted':
            ei, perm = ei.sort_by('col')
            if attr is not None:  # stays a leaf in the caller's sorted order
                leaves['edge_attr'] = attr = attr.detach()[perm].requires_grad_()
        return Inputs(x, ei, attr, leaves)

    # Sparse adjacencies (targets are rows). Duplicate edges merge when coalesced.
    # With self-loops and multi-dimensional features, the features are the values of
    # the adjacency (an explicit 'edge_attr' together with self-loops is an error in
    # PyG, see `test_invalid_combinations_raise_like_pyg`); otherwise 'edge_attr' is
    # passed explicitly, one row per stored entry.
    size = (num_dst, N_SRC)
    values_are_features = cfg.loops and cfg.edge in ('d1_2d', 'd4')
    if form in ('coo', 'csr'):
        to_sparse = to_torch_coo_tensor if form == 'coo' else to_torch_csr_tensor
        nnz = to_sparse(edge_index.flip(0), weight, size)._nnz()
        gen.set_state(gen_state)
        if values_are_features:
            # One row per input edge, summed where coalescing merges duplicates. Neither
            # layer can differentiate the values: PyG's self-loop utilities rebuild the
            # adjacency with in-place `_coalesced_`, which has no derivative.
            values = features(num_edges).detach()
            del leaves['edge_attr']
            return Inputs(x, to_sparse(edge_index.flip(0), values, size), None, leaves)
        adj = to_sparse(edge_index.flip(0), weight, size)
        return Inputs(x, adj, None if cfg.loops else features(nnz), leaves)
    assert form == 'sparse_tensor'
    row, col = edge_index[1], edge_index[0]
    if edge_dim is None or cfg.loops:
        adj = SparseTensor(row=row, col=col, value=weight, sparse_sizes=size)
        return Inputs(x, adj, features(num_edges) if cfg.loops else None, leaves)
    attr = features(num_edges)
    perm = SparseTensor(row=row, col=col, value=torch.arange(num_edges, device=device),
                        sparse_sizes=size).storage.value()
    leaves['edge_attr'] = attr = attr.detach()[perm].requires_grad_()
    if cfg.heads == 1:  # features as the values of the adjacency
        adj = SparseTensor(row=row[perm], col=col[perm], value=attr, sparse_sizes=size,
                           is_sorted=True)
        return Inputs(x, adj, None, leaves)
    adj = SparseTensor(row=row[perm], col=col[perm], value=weight[perm],
                       sparse_sizes=size, is_sorted=True)
    return Inputs(x, adj, attr, leaves)


def layer_kwargs(cfg: Config) -> dict:
    edge_dim = EDGE_DIM[cfg.edge]
    in_channels = (F_SRC, F_DST) if cfg.bipartite else F_SRC
    fill: object = cfg.fill
    if cfg.fill == 'float':
        fill = 0.5
    elif cfg.fill == 'tensor':
        fill = torch.arange(edge_dim or 1, dtype=cfg.torch_dtype) * 0.5 - 0.75
    return dict(in_channels=in_channels, out_channels=4, heads=cfg.heads,
                concat=cfg.concat, add_self_loops=cfg.loops, edge_dim=edge_dim,
                fill_value=fill, residual=cfg.residual, bias=cfg.bias)


def make_pair(cfg: Config, seed: int = 0,
              device: str = 'cpu') -> Tuple[PyGGATConv, GATConv]:
    """PyG's layer and ours with the same arguments and weights, in eval mode, on
    ``device``."""
    kwargs = layer_kwargs(cfg)
    torch.manual_seed(seed)
    pyg = PyGGATConv(**kwargs).double()
    ours = GATConv(**kwargs)
    with torch.no_grad():  # a non-zero bias, so that it is tested too
        for p in pyg.parameters():
            p.copy_(_float32_exact(torch.randn_like(p), torch.float64))
    pyg = pyg.to(device, cfg.torch_dtype).eval()
    ours = ours.to(device, cfg.torch_dtype).eval()
    ours.load_state_dict(pyg.state_dict(), strict=True)
    return pyg, ours


# Comparing ###################################################################


def run(layer, inputs: Inputs, key: str, attention: bool = True):
    """Forward (with attention weights unless ``attention=False``) and the gradients of
    a random loss of the output and the attention weights."""
    gen = _generator(key + '/grad')
    if attention:
        out, att = layer(inputs.x, inputs.edge_index, inputs.edge_attr,
                         return_attention_weights=True)
        if isinstance(att, tuple):
            adj, alpha = att
        else:  # SparseTensor
            adj, alpha = att, att.storage.value()
    else:
        out = layer(inputs.x, inputs.edge_index, inputs.edge_attr)
        adj, alpha = None, out.new_zeros(0)
    def weights(like: Tensor) -> Tensor:
        return torch.randn(like.shape, generator=gen, dtype=torch.float64).to(like)

    loss = (out * weights(out)).sum() + (alpha * weights(alpha)).sum()
    names = list(inputs.leaves) + [n for n, _ in layer.named_parameters()]
    tensors = list(inputs.leaves.values()) + [p for _, p in layer.named_parameters()]
    grads = torch.autograd.grad(loss, tensors, allow_unused=True)
    return out, adj, alpha, dict(zip(names, grads))


def assert_same_adjacency(ours, ref, tol: float) -> None:
    assert type(ours) is type(ref)
    if isinstance(ref, SparseTensor):
        assert ours.sparse_sizes() == ref.sparse_sizes()
        for a, b in zip(ours.coo()[:2], ref.coo()[:2]):
            assert torch.equal(a, b)
        torch.testing.assert_close(ours.storage.value(), ref.storage.value(), atol=tol,
                                   rtol=tol)
        return
    assert ours.layout == ref.layout and ours.dtype == ref.dtype
    assert ours.shape == ref.shape
    if ref.layout == torch.sparse_coo:
        assert torch.equal(ours.indices(), ref.indices())
        torch.testing.assert_close(ours.values(), ref.values(), atol=tol, rtol=tol)
    elif ref.layout == torch.sparse_csr:
        assert torch.equal(ours.crow_indices(), ref.crow_indices())
        assert torch.equal(ours.col_indices(), ref.col_indices())
        torch.testing.assert_close(ours.values(), ref.values(), atol=tol, rtol=tol)
    else:
        assert torch.equal(ours.as_subclass(Tensor), ref.as_subclass(Tensor))
        if isinstance(ref, EdgeIndex):
            assert ours.sparse_size() == ref.sparse_size()
            assert ours.sort_order == ref.sort_order
            assert ours.is_undirected == ref.is_undirected


def assert_close_results(ours, ref, tol: float, gradients: bool = True,
                         exact=None) -> None:
    """Compares two :func:`run` results (all but the gradients if ``not gradients``).

    Sums are formed in another order (folded edge weights, the fused kernel), so the
    absolute tolerance is relative to the tensor's largest entry. With ``exact`` (PyG's
    result in float64 for float32 inputs), an entry off by more than that still passes if
    it is at least as close to the exact value as twice PyG's own float32 error: a
    gradient summed over many edges can lose more than ``tol`` to float32 rounding.
    """
    (out, adj, alpha, grads), (ref_out, ref_adj, ref_alpha, ref_grads) = ours, ref
    exact_tensors = {}
    if exact is not None:
        exact_tensors = dict(exact[3], output=exact[0], attention=exact[2])

    def close(a: Tensor, b: Tensor, what: str) -> None:
        assert a.shape == b.shape and a.dtype == b.dtype, what
        scale = max(1.0, b.abs().max().item()) if b.numel() > 0 else 1.0
        ok = (a - b).abs() <= tol * scale + tol * b.abs()
        exact_value = exact_tensors.get(what.replace('gradient of ', ''))
        if exact_value is not None:
            ours_error = (a.double() - exact_value).abs()
            ok |= ours_error <= 2 * (b.double() - exact_value).abs()
        if not bool(ok.all()):
            torch.testing.assert_close(a, b, atol=tol * scale, rtol=tol,
                                       msg=lambda m: f'{what}: {m}')

    close(out, ref_out, 'output')
    close(alpha, ref_alpha, 'attention')
    if ref_adj is not None:
        assert_same_adjacency(adj, ref_adj, tol)
    if not gradients:
        return
    assert grads.keys() == ref_grads.keys()
    for name, ref_grad in ref_grads.items():
        grad = grads[name]
        assert (grad is None) == (ref_grad is None), f'gradient of {name}'
        if ref_grad is not None:
            close(grad, ref_grad, f'gradient of {name}')


def assert_same_state_dict_and_repr(pyg: PyGGATConv, ours: GATConv) -> None:
    pyg_state, our_state = pyg.state_dict(), ours.state_dict()
    assert list(pyg_state) == list(our_state)
    assert all(pyg_state[k].shape == our_state[k].shape for k in pyg_state)
    ours.load_state_dict(pyg_state, strict=True)
    pyg.load_state_dict(our_state, strict=True)
    assert repr(ours) == repr(pyg)


def assert_all_finite(result) -> None:
    out, _, alpha, grads = result
    assert out.isfinite().all() and alpha.isfinite().all()
    for name, grad in grads.items():
        assert grad is None or grad.isfinite().all(), f'gradient of {name}'


# The parity grid #############################################################

def _parity_backends():
    """(implementation, scatter backend of PyG's utilities): every implementation with
    torch_scatter where it is installed, and the reference (every kernel, where
    torch_scatter is not installed) with PyG's pure-PyTorch fallbacks."""
    found = []
    for impl in IMPLEMENTATIONS:
        if WITH_TORCH_SCATTER:
            found.append((impl, 'torch_scatter'))
        if impl.backend == 'reference' or not WITH_TORCH_SCATTER:
            found.append((impl, 'torch'))
    return found


PARITY_BACKENDS = _parity_backends()


@pytest.fixture(params=PARITY_BACKENDS, ids=[f'{impl.id}-{scatter}'
                                             for impl, scatter in PARITY_BACKENDS])
def backend(request, monkeypatch):
    """The implementation (its backend in force) and PyG's scatter backend of a parity
    test; yields the device to run on."""
    impl, scatter_backend = request.param
    if scatter_backend == 'torch':
        monkeypatch.setattr(torch_geometric.typing, 'WITH_TORCH_SCATTER', False)
    else:
        assert torch_geometric.typing.WITH_TORCH_SCATTER
    with ops.use_backend(impl.backend):
        yield impl.device


def test_grid_size():
    assert len(GRID) >= 200
    assert len({cfg.id for cfg in GRID}) == len(GRID)
    for fill in FILLS:  # every fill_value is used with edge features and self-loops
        assert any(c.fill == fill and c.loops and c.edge != 'none' for c in GRID)


@pytest.mark.parametrize('cfg', GRID, ids=[cfg.id for cfg in GRID])
def test_parity(cfg: Config, backend):
    device = backend
    pyg, ours = make_pair(cfg, device=device)
    assert_same_state_dict_and_repr(pyg, ours)
    if cfg.hooked:
        ours.register_message_forward_hook(lambda module, inputs, output: None)
    tol = TOL[cfg.torch_dtype]

    expected_error = cfg.pyg_raises()
    if expected_error is not None:
        with pytest.raises(expected_error):
            run(pyg, make_inputs(cfg, device=device), cfg.key)
        with pytest.raises(expected_error):
            run(ours, make_inputs(cfg, device=device), cfg.key)
        if not cfg.attention_only_error():
            return
    attention = expected_error is None

    ours_result = run(ours, make_inputs(cfg, device=device), cfg.key, attention)
    assert_all_finite(ours_result)
    if cfg.form == 'int32':
        # PyG on int32 indices computes the forward pass right, and returns the same
        # edge_index form (int32 unless self-loops were added), but its gradients are
        # wrong (see `test_int32_gradients`): the reference for those is PyG on int64.
        ref_int32 = run(pyg, make_inputs(cfg, device=device), cfg.key)
        assert_close_results(ours_result, ref_int32, tol, gradients=False)
        assert ours_result[1].dtype == (torch.long if cfg.loops else torch.int32)
        ref = run(pyg, make_inputs(cfg, form='long', device=device), cfg.key)
        ours_result = (ours_result[0], ours_result[1].long()) + ours_result[2:]
    else:
        ref = run(pyg, make_inputs(cfg, device=device), cfg.key, attention)
    exact = None
    if cfg.torch_dtype == torch.float32:
        cfg64 = dataclasses.replace(cfg, dtype='float64')
        exact = run(make_pair(cfg64, device=device)[0],
                    make_inputs(cfg64, form='long' if cfg.form == 'int32' else None,
                                device=device), cfg.key, attention)
    assert_close_results(ours_result, ref, tol, exact=exact)


class TanhLinear(Linear):
    """A projection with a forward of its own (not linear), which a layer must call, as
    PyG's does, instead of folding its weight into the attention scores."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(super().forward(x))


# Every input kind, edge-feature kind and fill value, with and without self-loops (on
# graphs with edges, where the projection reaches the output).
REPLACED_PROJECTION = [cfg for cfg in GRID if cfg.form == 'long' and cfg.graph != 'empty'
                       and cfg.pyg_raises() is None]


@pytest.mark.parametrize('cfg', REPLACED_PROJECTION, ids=[c.id for c in REPLACED_PROJECTION])
def test_parity_with_replaced_projections(cfg: Config):
    pyg, ours = make_pair(cfg)
    for layer in (pyg, ours):
        for name in ('lin', 'lin_src', 'lin_dst', 'lin_edge'):
            if getattr(layer, name) is not None:
                getattr(layer, name).__class__ = TanhLinear
    ours_result = run(ours, make_inputs(cfg), cfg.key)
    assert_close_results(ours_result, run(pyg, make_inputs(cfg), cfg.key),
                         TOL[cfg.torch_dtype])
    # The replacement is really in use: the plain layer computes something else.
    plain = make_pair(cfg)[1]
    assert not torch.allclose(run(plain, make_inputs(cfg), cfg.key)[0], ours_result[0])


def test_replaced_projections_are_all_covered():
    assert {cfg.inputs for cfg in REPLACED_PROJECTION} == set(INPUTS)
    assert {cfg.edge for cfg in REPLACED_PROJECTION} == set(EDGES)
    assert {cfg.fill for cfg in REPLACED_PROJECTION} == set(FILLS)


@pytest.mark.parametrize('form', ['coo', 'csr'])
def test_invalid_combinations_raise_like_pyg(form):
    """Explicit 'edge_attr' with a torch.sparse adjacency and self-loops: PyG's self-loop
    utilities assert that there is none; ours raises the same type, with a message."""
    cfg = Config(form=form, edge='d4', loops=False, inputs='x')
    inputs = make_inputs(cfg)  # explicit edge_attr (one row per stored entry)
    assert inputs.edge_attr is not None
    pyg, ours = make_pair(dataclasses.replace(cfg, loops=True))
    with pytest.raises(AssertionError):
        pyg(inputs.x, inputs.edge_index, inputs.edge_attr)
    with pytest.raises(AssertionError, match='values of the sparse adjacency'):
        ours(inputs.x, inputs.edge_index, inputs.edge_attr)


# Optional packages ###########################################################


def test_torch_sparse_present_where_required():
    """CI sets GAT_PYG_REQUIRE_SPARSE=1: the SparseTensor parity configs must be collected
    there, not left out."""
    if os.environ.get('GAT_PYG_REQUIRE_SPARSE') == '1':
        assert WITH_TORCH_SPARSE, 'torch_sparse is required but cannot be imported'
    assert ('sparse_tensor' in FORMS) == WITH_TORCH_SPARSE


def test_torch_scatter_present_where_required():
    if os.environ.get('GAT_PYG_REQUIRE_SCATTER') == '1':
        assert WITH_TORCH_SCATTER, 'torch_scatter is required but cannot be imported'
    assert any(scatter == 'torch_scatter' for _, scatter in PARITY_BACKENDS) == \
        WITH_TORCH_SCATTER


@pytest.mark.skipif(not WITH_TORCH_SCATTER, reason='torch_scatter is not installed')
def test_reference_path_uses_torch_scatter(monkeypatch):
    """With torch_scatter installed, the softmax and the aggregation of the pure-PyTorch
    path go through ``torch_scatter.segment_csr`` (and not with the flag off). The fused
    kernel does neither in PyTorch, so this uses the reference backend."""
    import torch_scatter
    calls: List[str] = []
    segment_csr = torch_scatter.segment_csr

    def spy(src, indptr, out=None, reduce='sum'):
        calls.append(reduce)
        return segment_csr(src, indptr, out, reduce)

    monkeypatch.setattr(torch_scatter, 'segment_csr', spy)
    cfg = Config(form='long', edge='d4', loops=True, inputs='x')
    pyg, ours = make_pair(cfg)
    with ops.use_backend('reference'):
        result = run(ours, make_inputs(cfg), cfg.key)
        assert 'max' in calls and calls.count('sum') >= 2  # softmax max, sum; aggregation
        assert_close_results(result, run(pyg, make_inputs(cfg), cfg.key), TOL[torch.float64])
        calls.clear()
        monkeypatch.setattr(torch_geometric.typing, 'WITH_TORCH_SCATTER', False)
        run(ours, make_inputs(cfg), cfg.key)
        assert calls == []


# int32 indices ###############################################################


@pytest.mark.parametrize('fill', ['max', 'min', 'mean', 'add'])
@pytest.mark.parametrize('loops', [True, False])
@pytest.mark.parametrize('hooked', [False, True])
def test_int32_gradients(fill, loops, hooked):
    """int32 indices give int64's gradients, finite. PyG's are wrong on int32 indices
    (NaN for the edge features of 'max'/'min' self-loops, wrong finite values elsewhere):
    its scatter backward gathers with an expanded (stride-0) int32 index, which
    ``torch.gather`` mishandles on CPU in torch 2.13. PyG's forward pass is right."""
    cfg = Config(form='int32', edge='d4', loops=loops, inputs='x', fill=fill, graph='dups',
                 hooked=hooked)
    pyg, ours = make_pair(cfg)
    if hooked:  # PyG's `propagate` path of our layer (explainers, hooks)
        ours.register_message_forward_hook(lambda module, inputs, output: None)
    ours_int32 = run(ours, make_inputs(cfg), cfg.key)
    assert_all_finite(ours_int32)
    assert_close_results(ours_int32, run(pyg, make_inputs(cfg), cfg.key), 1e-10,
                         gradients=False)
    ours_int32 = (ours_int32[0], ours_int32[1].long()) + ours_int32[2:]
    assert_close_results(ours_int32, run(pyg, make_inputs(cfg, form='long'), cfg.key), 1e-10)


# Dropout #####################################################################


def _dropout_layer(p: float, heads: int = 4,
                   device: str = 'cpu') -> Tuple[GATConv, Tensor, Tensor, Tensor]:
    torch.manual_seed(0)
    layer = GATConv(8, 4, heads=heads, dropout=p, edge_dim=2).to(device, torch.float64)
    x = torch.randn(300, 8, dtype=torch.float64)
    edge_index = torch.randint(0, 300, (2, 3000))
    edge_attr = torch.randn(3000, 2, dtype=torch.float64)
    return layer, x.to(device), edge_index.to(device), edge_attr.to(device)


@parametrize()
def test_dropout_is_deterministic_under_manual_seed(impl):
    layer, x, edge_index, edge_attr = _dropout_layer(0.3, device=impl.device)
    layer.train()
    results = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        out, (_, alpha) = layer(x, edge_index, edge_attr, return_attention_weights=True)
        results.append((out, alpha))
    # Same seed, same bits; another seed, another mask.
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])
    assert not torch.equal(results[0][1], results[2][1])
    # PyG's `propagate` path (hooks, explainers) draws the same mask for the seed.
    layer.register_message_forward_hook(lambda module, inputs, output: None)
    torch.manual_seed(1)
    out, (_, alpha) = layer(x, edge_index, edge_attr, return_attention_weights=True)
    torch.testing.assert_close(alpha, results[0][1], atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(out, results[0][0], atol=1e-12, rtol=1e-12)


def test_eval_mode_ignores_dropout():
    layer, x, edge_index, edge_attr = _dropout_layer(0.6)
    pyg = PyGGATConv(8, 4, heads=4, dropout=0.6, edge_dim=2).double()
    pyg.load_state_dict(layer.state_dict())
    layer.eval(), pyg.eval()
    out1, (_, alpha1) = layer(x, edge_index, edge_attr, return_attention_weights=True)
    out2, (_, alpha2) = layer(x, edge_index, edge_attr, return_attention_weights=True)
    assert torch.equal(out1, out2) and torch.equal(alpha1, alpha2)
    ref, (_, ref_alpha) = pyg(x, edge_index, edge_attr, return_attention_weights=True)
    torch.testing.assert_close(out1, ref, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(alpha1, ref_alpha, atol=1e-10, rtol=1e-10)


@parametrize()
@pytest.mark.parametrize('p', [0.2, 0.5])
def test_dropout_statistics(impl, p):
    """About ``p`` of the attention entries are zeroed; kept ones are scaled by
    ``1 / (1 - p)``; the output is the sum of the dropped-out attention times the
    transformed sources (checked against the non-fused computation from the weights)."""
    layer, x, edge_index, edge_attr = _dropout_layer(p, device=impl.device)
    layer.eval()
    _, (_, alpha_eval) = layer(x, edge_index, edge_attr, return_attention_weights=True)
    layer.train()
    torch.manual_seed(3)
    out, (loop_index, alpha) = layer(x, edge_index, edge_attr,
                                     return_attention_weights=True)
    dropped = alpha == 0
    count = alpha.numel()  # (3000 + 300) edges x 4 heads
    assert abs(dropped.double().mean().item() - p) < 4 * (p * (1 - p) / count)**0.5
    torch.testing.assert_close(alpha[~dropped], alpha_eval[~dropped] / (1 - p), atol=1e-12,
                               rtol=1e-12)
    # Every head and every edge position drops independently: no head is all dropped.
    assert (dropped.double().mean(0) - p).abs().max() < 0.05
    h = layer.lin(x).view(-1, 4, 4)
    expected = x.new_zeros(300, 4, 4).index_add_(
        0, loop_index[1], alpha.unsqueeze(-1) * h[loop_index[0]])
    torch.testing.assert_close(out, expected.view(300, 16) + layer.bias, atol=1e-10,
                               rtol=1e-10)


# Gradcheck of the whole layer ################################################


@parametrize()
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
def test_gradcheck(impl, heads, concat, edge_dim, dropout, bipartite, loops):
    """The whole layer, float64 gradcheck with respect to the features, the edge features
    and every parameter (dropout: the same seed in every evaluation)."""
    gen = torch.Generator().manual_seed(3)
    num_src, num_dst, e = 7, (5 if bipartite else 7), 24
    x_src = torch.randn(num_src, 4, generator=gen, dtype=torch.float64)
    x_dst = torch.randn(num_dst, 3, generator=gen, dtype=torch.float64) if bipartite else None
    edge_index = torch.stack([torch.randint(0, num_src, (e,), generator=gen),
                              torch.randint(0, num_dst, (e,), generator=gen)])
    edge_attr = torch.randn(e, edge_dim, generator=gen, dtype=torch.float64) if edge_dim else None
    torch.manual_seed(0)
    conv = GATConv((4, 3) if bipartite else 4, 3, heads=heads, concat=concat,
                   edge_dim=edge_dim, dropout=dropout, add_self_loops=loops)
    conv = conv.to(impl.device, torch.float64).train()
    names = [name for name, _ in conv.named_parameters()]
    inputs = [x_src] + ([x_dst] if bipartite else []) + ([edge_attr] if edge_dim else [])
    leaves = [t.to(impl.device).requires_grad_() for t in inputs] + [
        p.detach().clone().requires_grad_() for p in conv.parameters()]
    edge_index = edge_index.to(impl.device)

    def fn(*args):
        features, params = args[:len(inputs)], args[len(inputs):]
        xs = (features[0], features[1]) if bipartite else features[0]
        attr = features[-1] if edge_dim else None
        torch.manual_seed(7)  # the dropout seed: the same mask in every evaluation
        return torch.func.functional_call(conv, dict(zip(names, params)),
                                          (xs, edge_index, attr))

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7)


# Bad input ###################################################################


def _bad_input_cases():
    x = torch.randn(N_SRC, F_SRC)
    ei = torch.randint(0, N_SRC, (2, NUM_EDGES))
    attr = torch.randn(NUM_EDGES, 4)

    def set_(t: Tensor, row: int, col: int, value: int) -> Tensor:
        t = t.clone()
        t[row, col] = value
        return t

    # (id, layer kwargs, forward args, exception, message fragment)
    return [
        ('source_out_of_range', {}, (x, set_(ei, 0, 3, N_SRC)), IndexError,
         f'source index {N_SRC}'),
        ('target_out_of_range', {}, (x, set_(ei, 1, 5, N_SRC + 3)), IndexError,
         f'target index {N_SRC + 3}'),
        ('bipartite_target_out_of_range', dict(in_channels=(F_SRC, F_SRC)),
         ((x, x[:6]), set_(ei.clamp(max=5), 1, 2, 6)), IndexError, 'target index 6'),
        ('negative_source', {}, (x, set_(ei, 0, 1, -1)), IndexError, 'negative source'),
        ('negative_target', {}, (x, set_(ei, 1, 1, -2)), IndexError, 'negative target'),
        ('x_width', {}, (torch.randn(N_SRC, F_SRC + 1), ei), ValueError,
         f'built for {F_SRC} channels'),
        ('x_dst_width', dict(in_channels=(F_SRC, F_DST)),
         ((x, torch.randn(N_SRC, F_DST + 2)), ei), ValueError, "'x_dst'"),
        ('edge_attr_width', dict(edge_dim=4), (x, ei, attr[:, :3]), ValueError,
         'edge_dim=4'),
        ('edge_attr_length', dict(edge_dim=4), (x, ei, attr[:-1]), ValueError,
         "'edge_attr' of shape"),
        ('float_edge_index', {}, (x, ei.double()), TypeError, 'int64 or int32'),
        ('edge_index_3_rows', {}, (x, torch.randint(0, N_SRC, (3, NUM_EDGES))),
         ValueError, '[2, num_edges]'),
        ('edge_index_1d', {}, (x, ei[0]), ValueError, '[2, num_edges]'),
    ]


@pytest.mark.parametrize('loops', [True, False])
@pytest.mark.parametrize('case', _bad_input_cases(), ids=lambda case: case[0])
def test_bad_input_raises(case, loops):
    _, kwargs, args, error, fragment = case
    kwargs = dict(dict(in_channels=F_SRC, out_channels=4, heads=2), **kwargs)
    layer = GATConv(**kwargs, add_self_loops=loops)
    with pytest.raises(error, match=re.escape(fragment)):
        layer(*args)


def test_edge_attr_without_edge_dim_warns():
    cfg = Config(form='long', edge='none', loops=True, inputs='x')
    pyg, ours = make_pair(cfg)
    inputs = make_inputs(cfg)
    edge_attr = torch.randn(inputs.edge_index.size(1), 3, dtype=torch.float64)
    with pytest.warns(UserWarning, match='edge_dim'):
        out = ours(inputs.x, inputs.edge_index, edge_attr)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # without edge_attr, no warning
        ours(inputs.x, inputs.edge_index)
    # PyG ignores the features silently; so does the result.
    torch.testing.assert_close(out, pyg(inputs.x, inputs.edge_index, edge_attr))


# Lazy shapes, flow ###########################################################


@pytest.mark.parametrize('bipartite', [False, True])
def test_lazy_in_channels(bipartite):
    """``in_channels=-1`` (or ``(-1, -1)``): shapes come from the first forward pass; then
    the weights copy over and everything matches PyG."""
    cfg = Config(form='long', edge='d4', loops=not bipartite,
                 inputs='bip' if bipartite else 'x', residual=True)
    kwargs = layer_kwargs(cfg)
    kwargs['in_channels'] = (-1, -1) if bipartite else -1
    pyg = PyGGATConv(**kwargs).double().eval()
    ours = GATConv(**kwargs).double().eval()
    assert repr(ours) == repr(pyg)
    inputs = make_inputs(cfg)
    with torch.no_grad():  # lazy initialisation
        pyg(inputs.x, inputs.edge_index, inputs.edge_attr)
        ours(inputs.x, inputs.edge_index, inputs.edge_attr)
    assert_same_state_dict_and_repr(pyg, ours)
    assert_close_results(run(ours, inputs, cfg.key), run(pyg, make_inputs(cfg), cfg.key), 1e-10)


@pytest.mark.parametrize('form', FORMS)
@pytest.mark.parametrize('loops', [True, False])
def test_flow_target_to_source(form, loops, backend):
    """``flow='target_to_source'``: ``edge_index[0]`` holds the targets. PyG rejects it
    for sparse adjacencies; so does ours, with the same exception type."""
    cfg = Config(form=form, edge='none' if form in SPARSE_FORMS else 'd4', loops=loops,
                 inputs='x', graph='isolated')
    kwargs = dict(layer_kwargs(cfg), flow='target_to_source')
    torch.manual_seed(0)
    device = backend
    pyg = PyGGATConv(**kwargs).to(device, torch.float64).eval()
    ours = GATConv(**kwargs).to(device, torch.float64).eval()
    ours.load_state_dict(pyg.state_dict())
    if form in SPARSE_FORMS:
        with pytest.raises(ValueError) as pyg_error:
            run(pyg, make_inputs(cfg, device=device), cfg.key)
        with pytest.raises(ValueError) as our_error:
            run(ours, make_inputs(cfg, device=device), cfg.key)
        assert 'target_to_source' in str(our_error.value), str(pyg_error.value)
        return
    if form == 'int32':
        ours_result = run(ours, make_inputs(cfg, device=device), cfg.key)
        ours_result = (ours_result[0], ours_result[1].long()) + ours_result[2:]
        ref = run(pyg, make_inputs(cfg, form='long', device=device), cfg.key)
    else:
        ours_result, ref = run(ours, make_inputs(cfg, device=device), cfg.key), run(pyg, make_inputs(cfg, device=device),
                                                                       cfg.key)
    assert_close_results(ours_result, ref, 1e-10)


# torch.compile, explainers, to_hetero ########################################


class TwoLayerGAT(torch.nn.Module):
    def __init__(self, conv=GATConv, edge_dim: Optional[int] = None, **kwargs):
        super().__init__()
        self.conv1 = conv(F_SRC, 4, heads=2, edge_dim=edge_dim, **kwargs)
        self.conv2 = conv(8, 3, heads=1, edge_dim=edge_dim, concat=False, **kwargs)

    def forward(self, x: Tensor, edge_index: Tensor,
                edge_attr: Optional[Tensor] = None) -> Tensor:
        return self.conv2(self.conv1(x, edge_index, edge_attr).relu(), edge_index, edge_attr)


def _small_graph(seed: int = 0, edge_dim: int = 3):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(N_SRC, F_SRC, generator=gen)
    edge_index = torch.randint(0, N_SRC, (2, NUM_EDGES), generator=gen)
    edge_attr = torch.randn(NUM_EDGES, edge_dim, generator=gen)
    return x, edge_index, edge_attr


def _param_grads(model: torch.nn.Module) -> List[Tensor]:
    return [p.grad.clone() for p in model.parameters()]


def test_torch_compile_fullgraph():
    """``torch.compile(model, fullgraph=True)`` (inductor) matches eager, forward and
    backward, for a two-layer model with edge features and self-loops.

    Known limit, not ours: inductor's backward of a model whose *two* layers each remove and
    add self-loops with edge features fails to compile ("For u1 + 12, expected [u1] to
    have been codegen-ed") in torch 2.13, for PyG's GATConv just the same; the data-
    dependent edge count of PyG's `remove_self_loops` is the trigger. So the backward is
    checked on the model without edge features, and the forward on the one with them.
    """
    torch._dynamo.reset()
    x, edge_index, edge_attr = _small_graph()
    torch.manual_seed(0)
    model = TwoLayerGAT(edge_dim=3).eval()
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, edge_index, edge_attr),
                                   model(x, edge_index, edge_attr))

    torch.manual_seed(0)
    model = TwoLayerGAT().eval()
    compiled = torch.compile(model, fullgraph=True)
    out = compiled(x, edge_index)
    expected = model(x, edge_index)
    torch.testing.assert_close(out, expected)
    out.square().sum().backward()
    compiled_grads = _param_grads(model)
    model.zero_grad()
    expected.square().sum().backward()
    for grad, ref in zip(compiled_grads, _param_grads(model)):
        torch.testing.assert_close(grad, ref, atol=1e-5, rtol=1e-5)


def test_torch_compile_fullgraph_backward_with_edge_features():
    """The backward with edge features, traced in full (``aot_eager``: the same graph
    capture and autograd as inductor, without inductor's code generation)."""
    torch._dynamo.reset()
    x, edge_index, edge_attr = _small_graph()
    edge_attr.requires_grad_()
    torch.manual_seed(0)
    model = TwoLayerGAT(edge_dim=3).eval()
    compiled = torch.compile(model, fullgraph=True, backend='aot_eager')
    out = compiled(x, edge_index, edge_attr)
    expected = model(x, edge_index, edge_attr)
    torch.testing.assert_close(out, expected)
    grads = torch.autograd.grad(out.square().sum(), [edge_attr, *model.parameters()])
    ref_grads = torch.autograd.grad(expected.square().sum(), [edge_attr, *model.parameters()])
    for grad, ref in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref, atol=1e-5, rtol=1e-5)


def _copied_models():
    torch.manual_seed(0)
    pyg = TwoLayerGAT(conv=PyGGATConv).double().eval()
    ours = TwoLayerGAT().double().eval()
    ours.load_state_dict(pyg.state_dict(), strict=True)
    x, edge_index, _ = _small_graph()
    return pyg, ours, x.double(), edge_index


def _explainer(model, algorithm):
    from torch_geometric.explain import Explainer
    return Explainer(
        model=model, algorithm=algorithm, explanation_type='model',
        node_mask_type='attributes' if not _is_attention(algorithm) else None,
        edge_mask_type='object',
        model_config=dict(mode='multiclass_classification', task_level='node',
                          return_type='raw'))


def _is_attention(algorithm) -> bool:
    from torch_geometric.explain.algorithm import AttentionExplainer
    return isinstance(algorithm, AttentionExplainer)


@pytest.mark.parametrize('reduce', ['max', 'mean'])
def test_attention_explainer(reduce):
    from torch_geometric.explain.algorithm import AttentionExplainer
    pyg, ours, x, edge_index = _copied_models()
    index = torch.tensor([0, 3, 7])
    explanation = _explainer(ours, AttentionExplainer(reduce=reduce))(x, edge_index,
                                                                       index=index)
    expected = _explainer(pyg, AttentionExplainer(reduce=reduce))(x, edge_index, index=index)
    assert explanation.edge_mask.shape == (edge_index.size(1), )
    assert explanation.edge_mask.abs().sum() > 0
    torch.testing.assert_close(explanation.edge_mask, expected.edge_mask, atol=1e-10,
                               rtol=1e-10)


def test_gnn_explainer():
    from torch_geometric.explain.algorithm import GNNExplainer
    pyg, ours, x, edge_index = _copied_models()
    explanations = []
    for model in (ours, pyg):
        torch.manual_seed(1)  # the masks start from random values
        explanations.append(_explainer(model, GNNExplainer(epochs=5))(x, edge_index,
                                                                       index=2))
    explanation, expected = explanations
    assert explanation.edge_mask.shape == (edge_index.size(1), )
    assert explanation.node_mask.shape == x.shape
    assert explanation.edge_mask.isfinite().all()
    # The same model, so the same optimisation (the explain path is PyG's `propagate`).
    torch.testing.assert_close(explanation.edge_mask, expected.edge_mask, atol=1e-6,
                               rtol=1e-6)
    torch.testing.assert_close(explanation.node_mask, expected.node_mask, atol=1e-6,
                               rtol=1e-6)


class LazyGAT(torch.nn.Module):
    def __init__(self, conv):
        super().__init__()
        self.conv1 = conv((-1, -1), 4, heads=2, add_self_loops=False)
        self.conv2 = conv((-1, -1), 3, heads=1, add_self_loops=False, residual=True)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.conv2(self.conv1(x, edge_index).relu(), edge_index)


def test_to_hetero():
    from torch_geometric.data import HeteroData
    from torch_geometric.nn import to_hetero

    gen = torch.Generator().manual_seed(0)
    data = HeteroData()
    data['paper'].x = torch.randn(10, 5, generator=gen, dtype=torch.float64)
    data['author'].x = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    data['author', 'writes', 'paper'].edge_index = torch.stack([
        torch.randint(0, 7, (20, ), generator=gen),
        torch.randint(0, 10, (20, ), generator=gen)])
    data['paper', 'written_by', 'author'].edge_index = (
        data['author', 'writes', 'paper'].edge_index.flip(0))
    data['paper', 'cites', 'paper'].edge_index = torch.randint(0, 10, (2, 25),
                                                               generator=gen)

    models = []
    for conv in (PyGGATConv, GATConv):
        model = to_hetero(LazyGAT(conv), data.metadata(), aggr='sum').double()
        with torch.no_grad():  # lazy initialisation
            model(data.x_dict, data.edge_index_dict)
        models.append(model)
    pyg, ours = models
    ours.load_state_dict(pyg.state_dict(), strict=True)

    x_dict = {k: v.clone().requires_grad_() for k, v in data.x_dict.items()}
    outs = [model(x_dict, data.edge_index_dict) for model in (ours, pyg)]
    assert outs[0].keys() == outs[1].keys() == {'paper', 'author'}
    for key in outs[1]:
        torch.testing.assert_close(outs[0][key], outs[1][key], atol=1e-10, rtol=1e-10)
    grads = []
    for model, out in zip((ours, pyg), outs):
        loss = sum((v * torch.arange(v.numel(), dtype=v.dtype).view_as(v)).sum()
                   for v in out.values())
        grads.append(torch.autograd.grad(loss, [*x_dict.values(), *model.parameters()]))
    for grad, ref in zip(*grads):
        torch.testing.assert_close(grad, ref, atol=1e-10, rtol=1e-10)
