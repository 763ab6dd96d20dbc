"""The parity machinery shared by the layers' tests: a grid of configurations (every input
and return form, edge features and fill value, self-loops, graph kind, heads, residual,
bias, dtype), the same inputs in every form and on every device, PyG's layer and ours with
the same weights, and the comparison of outputs, attention and every gradient.

:func:`check_parity` runs one configuration against PyG's layer itself (with int32 indices,
against PyG's int64 run for the gradients: PyG's own int32 backward is wrong in places).
"""
import dataclasses
import random
import zlib
from typing import Dict, List, Optional

import pytest
import torch
import torch_geometric.typing
from torch import Tensor
from torch_geometric import EdgeIndex
from torch_geometric.nn import GATConv as PyGGATConv
from torch_geometric.nn import GATv2Conv as PyGGATv2Conv
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.typing import SparseTensor
from torch_geometric.utils import to_torch_coo_tensor, to_torch_csr_tensor

from gat_pyg.nn import GATConv, GATv2Conv
from implementations import IMPLEMENTATIONS

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
    layer: str = 'gat'  # or 'gatv2'
    share_weights: bool = False  # gatv2

    @property
    def id(self) -> str:
        return '-'.join([
            self.form, self.edge, 'loops' if self.loops else 'noloops', self.inputs,
            f'h{self.heads}', 'cat' if self.concat else 'mean', self.fill,
            'res' if self.residual else 'nores', 'bias' if self.bias else 'nobias',
            self.graph, self.dtype
        ] + (['hooked'] if self.hooked else []) + (['shared'] if self.share_weights else []))

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
        return self._always_raises() or (RuntimeError if self.attention_only_error()
                                         else None)

    def _always_raises(self) -> Optional[type]:
        if self.layer == 'gatv2' and self.inputs in ('pair_none', 'bip_none'):
            return AssertionError  # GATv2 needs the target features
        if (self.form == 'sparse_tensor' and self.loops
                and EDGE_DIM[self.edge] is not None):
            return NotImplementedError  # SparseTensor + edge_dim + add_self_loops
        return None

    def attention_only_error(self) -> bool:
        """A COO adjacency with multi-dimensional values (the edge features) cannot hold
        the attention weights (``set_sparse_value`` keeps the feature dimension in the
        size): ``return_attention_weights=True`` raises, the plain forward works. (CSR does
        not check, and returns a CSR tensor of size ``[N, N, D, H]`` in both layers.)"""
        return (self._always_raises() is None and self.form == 'coo' and self.loops
                and self.edge in ('d1_2d', 'd4'))


def _cycled(layer: str, key: str, **fixed) -> Config:
    """A config of ``layer`` whose remaining dimensions are drawn from a generator seeded by
    ``key``, so the grid (and its ids) is the same in every run."""
    rng = random.Random(key)
    dims = dict(heads=rng.choice([1, 3]), concat=rng.choice([True, False]),
                fill=rng.choice(FILLS), residual=rng.choice([True, False]),
                bias=rng.choice([True, False]), graph=rng.choice(GRAPHS),
                dtype=rng.choice(['float64', 'float64', 'float32']),
                hooked=rng.random() < 0.15)
    if layer == 'gatv2':
        dims['share_weights'] = rng.random() < 0.3
    dims.update(fixed)
    if dims.get('inputs') in ('bip', 'bip_none'):  # one projection cannot serve two widths
        dims['share_weights'] = False
    return Config(layer=layer, **dims)


def grid(layer: str) -> List[Config]:
    """The parity grid of ``layer`` (``'gat'`` or ``'gatv2'``)."""
    configs: Dict[str, Config] = {}

    def add(cfg: Config) -> None:
        configs.setdefault(cfg.id, cfg)

    # 1. Every form x edge-feature kind x self-loop policy x input kind.
    for form in FORMS:
        for edge in EDGES:
            for loops in (True, False):
                for inputs in INPUTS:
                    add(_cycled(layer, f'main/{form}/{edge}/{loops}/{inputs}', form=form,
                                edge=edge, loops=loops, inputs=inputs))
    # 2. Every fill_value with every edge-feature kind, for index forms that carry
    #    edge_attr, with self-loops (where fill_value matters), both dtypes.
    for fill in FILLS:
        for edge in ('d1_1d', 'd1_2d', 'd4'):
            for form in ('long', 'int32', 'ei_unsorted', 'coo'):
                for dtype in ('float64', 'float32'):
                    add(_cycled(layer, f'fill/{fill}/{edge}/{form}/{dtype}', fill=fill,
                                edge=edge, form=form, loops=True, inputs='x',
                                dtype=dtype, graph='loops' if dtype == 'float32'
                                else 'dups'))
    # 3. Every graph kind with every form, heads, concat, residual and bias.
    for graph in GRAPHS:
        for form in FORMS:
            for heads, concat, residual, bias in ((1, True, True, False),
                                                  (3, False, False, True),
                                                  (3, True, True, True)):
                add(_cycled(layer, f'graph/{graph}/{form}/{heads}/{concat}', graph=graph,
                            form=form, heads=heads, concat=concat, residual=residual,
                            bias=bias, loops=heads == 3, edge='d4' if concat else 'none',
                            inputs='bip' if residual and not bias else 'x'))
    return list(configs.values())

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
    kwargs = dict(in_channels=in_channels, out_channels=4, heads=cfg.heads,
                  concat=cfg.concat, add_self_loops=cfg.loops, edge_dim=edge_dim,
                  fill_value=fill, residual=cfg.residual, bias=cfg.bias)
    if cfg.layer == 'gatv2':
        kwargs['share_weights'] = cfg.share_weights
    return kwargs


LAYERS = {'gat': (PyGGATConv, GATConv), 'gatv2': (PyGGATv2Conv, GATv2Conv)}


class TanhLinear(Linear):
    """A projection with a forward of its own (not linear), which a layer must call, as
    PyG's does, instead of folding its weight into the attention scores or the operator."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(super().forward(x))


def replaced_projection_configs(configs: List[Config]) -> List[Config]:
    """The configurations of a grid on which replaced projections are checked: every input
    kind, edge-feature kind and fill value, on graphs with edges (where the projection
    reaches the output), in one edge form."""
    return [cfg for cfg in configs if cfg.form == 'long' and cfg.graph != 'empty'
            and cfg.pyg_raises() is None]


def check_replaced_projections(cfg: Config, names) -> None:
    """The projections ``names`` of both layers replaced by :class:`TanhLinear`: ours
    matches PyG's, and differs from the plain layer (the replacement is really in use)."""
    pyg, ours = make_pair(cfg)
    for layer in (pyg, ours):
        for name in names:
            if getattr(layer, name) is not None:
                getattr(layer, name).__class__ = TanhLinear
    ours_result = run(ours, make_inputs(cfg), cfg.key)
    assert_close_results(ours_result, run(pyg, make_inputs(cfg), cfg.key),
                         TOL[cfg.torch_dtype])
    plain = make_pair(cfg)[1]
    assert not torch.allclose(run(plain, make_inputs(cfg), cfg.key)[0], ours_result[0])


def make_pair(cfg: Config, seed: int = 0, device: str = 'cpu'):
    """PyG's layer and ours with the same arguments and weights, in eval mode, on
    ``device``."""
    kwargs = layer_kwargs(cfg)
    pyg_cls, ours_cls = LAYERS[cfg.layer]
    torch.manual_seed(seed)
    pyg = pyg_cls(**kwargs).double()
    ours = ours_cls(**kwargs)
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


def assert_same_state_dict_and_repr(pyg, ours) -> None:
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


def check_parity(cfg: Config, device: str) -> None:
    """Our layer against PyG's for ``cfg`` on ``device``: the same state dict and ``repr``,
    the same exception where PyG raises, else the same outputs, adjacency, attention and
    gradients (float64 to 1e-10, float32 to 1e-5 or twice PyG's own float32 error)."""
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
