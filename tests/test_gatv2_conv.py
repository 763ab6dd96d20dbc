"""Parity of :class:`gat_pyg.nn.GATv2Conv` with :class:`torch_geometric.nn.GATv2Conv`: the
grid of ``tests/parity.py`` (every input and return form, edge_dim None/1/4 with every
fill_value, self-loops on and off, bipartite, share_weights, residual, bias, int32 indices
against PyG's int64 run, isolated targets, duplicate edges, empty graphs) on every
implementation of the operator, outputs, attention and every gradient; and what is
GATv2's own. The behaviours both layers share are tested in ``test_gat_conv.py``."""
import pytest
import torch
from torch_geometric.nn.dense.linear import Linear

from gat_pyg.nn import GATv2Conv

from implementations import KERNELS, parametrize
from parity import (EDGES, FILLS, FORMS, INPUTS, Config, check_parity,
                    check_replaced_projections, grid, make_inputs, make_pair,
                    replaced_projection_configs)

GRID = grid('gatv2')


def test_grid_size():
    assert len(GRID) >= 300
    assert len({cfg.id for cfg in GRID}) == len(GRID)
    assert {cfg.form for cfg in GRID} == set(FORMS)
    assert {cfg.edge for cfg in GRID} == set(EDGES)
    assert {cfg.inputs for cfg in GRID} == set(INPUTS)
    for fill in FILLS:  # every fill_value is used with edge features and self-loops
        assert any(c.fill == fill and c.loops and c.edge != 'none' for c in GRID)
    for name in ('share_weights', 'residual', 'bias', 'hooked', 'concat'):
        assert {getattr(cfg, name) for cfg in GRID} == {False, True}, name
    assert {cfg.heads for cfg in GRID} == {1, 3}
    assert {cfg.graph for cfg in GRID} == {'random', 'isolated', 'dups', 'loops', 'empty'}
    assert {cfg.dtype for cfg in GRID} == {'float64', 'float32'}


@pytest.mark.parametrize('cfg', GRID, ids=[cfg.id for cfg in GRID])
def test_parity(cfg: Config, backend):
    check_parity(cfg, backend)


REPLACED_PROJECTION = replaced_projection_configs(GRID)


@pytest.mark.parametrize('cfg', REPLACED_PROJECTION, ids=[c.id for c in REPLACED_PROJECTION])
def test_parity_with_replaced_projections(cfg: Config):
    """``lin_l``, ``lin_r`` and ``lin_edge`` replaced by modules with a forward of their
    own are called, as PyG's layer calls them; the replaced ``lin_edge``'s output enters
    the operator as the edge term."""
    check_replaced_projections(cfg, ('lin_l', 'lin_r', 'lin_edge'))


def test_replaced_projections_are_all_covered():
    assert {cfg.edge for cfg in REPLACED_PROJECTION} == set(EDGES)
    assert {cfg.share_weights for cfg in REPLACED_PROJECTION} == {False, True}


def test_share_weights_shares_one_module():
    cfg = Config(form='long', edge='d4', loops=True, inputs='x', layer='gatv2',
                 share_weights=True)
    pyg, ours = make_pair(cfg)
    assert ours.lin_r is ours.lin_l
    assert list(ours.state_dict()) == list(pyg.state_dict())


def test_target_features_are_required_like_pyg():
    cfg = Config(form='long', edge='none', loops=False, inputs='pair_none', layer='gatv2')
    pyg, ours = make_pair(cfg)
    inputs = make_inputs(cfg)
    with pytest.raises(AssertionError):
        pyg(inputs.x, inputs.edge_index)
    with pytest.raises(AssertionError, match='needs the target features'):
        ours(inputs.x, inputs.edge_index)


@parametrize()
def test_edge_term_is_formed_by_the_operator(impl, monkeypatch):
    """The edge term is formed by the operator from edge_attr and lin_edge's weight (inside
    the kernel, per edge; in the reference, as one product): lin_edge's forward, PyG's
    [E, H * C] product, is never called."""
    cfg = Config(form='long', edge='d4', loops=True, inputs='x', layer='gatv2')
    _, ours = make_pair(cfg, device=impl.device)
    inputs = make_inputs(cfg, device=impl.device)
    calls = []
    forward = Linear.forward
    monkeypatch.setattr(Linear, 'forward',
                        lambda self, x: calls.append(self) or forward(self, x))
    ours(inputs.x, inputs.edge_index, inputs.edge_attr)
    assert ours.lin_edge not in calls


@parametrize(KERNELS)
def test_kernel_saves_three_node_tensors_and_nothing_per_edge_and_channel(impl):
    """What a kernel path keeps for backward: nothing of size E x H x C (nor E x H), and of
    size N x H x C only x_l, x_r and the output (the softmax is recomputed from one float64
    log-sum-exp per target and head)."""
    N, E, H, C = 50, 4000, 2, 3
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N, 7, generator=gen, requires_grad=True)
    edge_index = torch.randint(0, N, (2, E), generator=gen)
    layer = GATv2Conv(7, C, heads=H, edge_dim=2)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = layer(x, edge_index, torch.randn(E, 2, generator=gen))
    out.sum().backward()
    floats = [t for t in saved if t.is_floating_point()]
    assert all(t.numel() < E * H for t in floats)
    assert sum(t.numel() == N * H * C for t in floats) == 3
    assert [t.dtype for t in floats if t.shape == (N, H)] == [torch.float64]


def test_projection_modules_with_hooks_are_called():
    """One product serves both projections, unless a module must be called: a forward hook
    on lin_l sees its output, as with PyG's layer."""
    cfg = Config(form='long', edge='none', loops=True, inputs='x', layer='gatv2')
    pyg, ours = make_pair(cfg)
    inputs = make_inputs(cfg)
    seen = []
    for layer in (ours, pyg):
        layer.lin_l.register_forward_hook(lambda module, args, out: seen.append(out))
        layer(inputs.x, inputs.edge_index)
    assert len(seen) == 2
    torch.testing.assert_close(seen[0], seen[1], atol=1e-12, rtol=1e-12)
