"""Parity of :class:`gat_pyg.nn.GATConv` with :class:`torch_geometric.nn.GATConv`, and the
behaviours both attention layers share (``layer`` runs them for GATConv and GATv2Conv).

The grid (``tests/parity.py``) builds PyG's layer and ours with the same constructor
arguments, copies the weights, runs both in eval mode with ``return_attention_weights=True``
and compares outputs, the returned adjacency (form, type and indices), the attention
weights and the gradients of every input and parameter, on every implementation of the
operator. Everything else (dropout, bad input, compile, explainers, ``to_hetero``, lazy
shapes, ``flow``) follows the grid.
"""
import dataclasses
import os
import re
import warnings
from typing import List, Optional, Tuple

import pytest
import torch
import torch_geometric.typing
from torch import Tensor

from gat_pyg import ops
from gat_pyg.nn import GATConv
from implementations import parametrize
from parity import (EDGES, F_DST, F_SRC, FILLS, FORMS, INPUTS, LAYERS, N_SRC, NUM_EDGES,
                    PARITY_BACKENDS, SPARSE_FORMS, TOL, WITH_TORCH_SCATTER, WITH_TORCH_SPARSE,
                    Config, assert_all_finite, assert_close_results,
                    assert_same_state_dict_and_repr, check_parity,
                    check_replaced_projections, grid, layer_kwargs,
                    make_inputs, make_pair, replaced_projection_configs, run)

GRID = grid('gat')
# The tests that run for both attention layers take `layer`: 'gat' or 'gatv2'.
BOTH_LAYERS = pytest.mark.parametrize('layer', list(LAYERS))


def test_grid_size():
    assert len(GRID) >= 200
    assert len({cfg.id for cfg in GRID}) == len(GRID)
    for fill in FILLS:  # every fill_value is used with edge features and self-loops
        assert any(c.fill == fill and c.loops and c.edge != 'none' for c in GRID)


@pytest.mark.parametrize('cfg', GRID, ids=[cfg.id for cfg in GRID])
def test_parity(cfg: Config, backend):
    check_parity(cfg, backend)


REPLACED_PROJECTION = replaced_projection_configs(GRID)


@pytest.mark.parametrize('cfg', REPLACED_PROJECTION, ids=[c.id for c in REPLACED_PROJECTION])
def test_parity_with_replaced_projections(cfg: Config):
    check_replaced_projections(cfg, ('lin', 'lin_src', 'lin_dst', 'lin_edge'))


def test_replaced_projections_are_all_covered():
    assert {cfg.inputs for cfg in REPLACED_PROJECTION} == set(INPUTS)
    assert {cfg.edge for cfg in REPLACED_PROJECTION} == set(EDGES)
    assert {cfg.fill for cfg in REPLACED_PROJECTION} == set(FILLS)


@BOTH_LAYERS
@pytest.mark.parametrize('form', ['coo', 'csr'])
def test_invalid_combinations_raise_like_pyg(form, layer):
    """Explicit 'edge_attr' with a torch.sparse adjacency and self-loops: PyG's self-loop
    utilities assert that there is none; ours raises the same type, with a message."""
    cfg = Config(form=form, edge='d4', loops=False, inputs='x', layer=layer)
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


@BOTH_LAYERS
@pytest.mark.parametrize('fill', ['max', 'min', 'mean', 'add'])
@pytest.mark.parametrize('loops', [True, False])
@pytest.mark.parametrize('hooked', [False, True])
def test_int32_gradients(fill, loops, hooked, layer):
    """int32 indices give int64's gradients, finite. PyG's are wrong on int32 indices
    (NaN for the edge features of 'max'/'min' self-loops, wrong finite values elsewhere):
    its scatter backward gathers with an expanded (stride-0) int32 index, which
    ``torch.gather`` mishandles on CPU in torch 2.13. PyG's forward pass is right."""
    cfg = Config(form='int32', edge='d4', loops=loops, inputs='x', fill=fill, graph='dups',
                 hooked=hooked, layer=layer)
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


def _dropout_layer(p: float, layer: str = 'gat', heads: int = 4,
                   device: str = 'cpu') -> Tuple[torch.nn.Module, Tensor, Tensor, Tensor]:
    torch.manual_seed(0)
    layer = LAYERS[layer][1](8, 4, heads=heads, dropout=p, edge_dim=2).to(device,
                                                                        torch.float64)
    x = torch.randn(300, 8, dtype=torch.float64)
    edge_index = torch.randint(0, 300, (2, 3000))
    edge_attr = torch.randn(3000, 2, dtype=torch.float64)
    return layer, x.to(device), edge_index.to(device), edge_attr.to(device)


@parametrize()
@BOTH_LAYERS
def test_dropout_is_deterministic_under_manual_seed(impl, layer):
    layer, x, edge_index, edge_attr = _dropout_layer(0.3, layer, device=impl.device)
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


@BOTH_LAYERS
def test_eval_mode_ignores_dropout(layer):
    pyg = LAYERS[layer][0](8, 4, heads=4, dropout=0.6, edge_dim=2).double()
    layer, x, edge_index, edge_attr = _dropout_layer(0.6, layer)
    pyg.load_state_dict(layer.state_dict())
    layer.eval(), pyg.eval()
    out1, (_, alpha1) = layer(x, edge_index, edge_attr, return_attention_weights=True)
    out2, (_, alpha2) = layer(x, edge_index, edge_attr, return_attention_weights=True)
    assert torch.equal(out1, out2) and torch.equal(alpha1, alpha2)
    ref, (_, ref_alpha) = pyg(x, edge_index, edge_attr, return_attention_weights=True)
    torch.testing.assert_close(out1, ref, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(alpha1, ref_alpha, atol=1e-10, rtol=1e-10)


@parametrize()
@BOTH_LAYERS
@pytest.mark.parametrize('p', [0.2, 0.5])
def test_dropout_statistics(impl, p, layer):
    """About ``p`` of the attention entries are zeroed; kept ones are scaled by
    ``1 / (1 - p)``; the output is the sum of the dropped-out attention times the
    transformed sources (checked against the non-fused computation from the weights)."""
    layer, x, edge_index, edge_attr = _dropout_layer(p, layer, device=impl.device)
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
    h = (layer.lin if isinstance(layer, GATConv) else layer.lin_l)(x).view(-1, 4, 4)
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
@BOTH_LAYERS
def test_gradcheck(impl, heads, concat, edge_dim, dropout, bipartite, loops, layer):
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
    conv = LAYERS[layer][1]((4, 3) if bipartite else 4, 3, heads=heads, concat=concat,
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


@BOTH_LAYERS
@pytest.mark.parametrize('loops', [True, False])
@pytest.mark.parametrize('case', _bad_input_cases(), ids=lambda case: case[0])
def test_bad_input_raises(case, loops, layer):
    _, kwargs, args, error, fragment = case
    kwargs = dict(dict(in_channels=F_SRC, out_channels=4, heads=2), **kwargs)
    layer = LAYERS[layer][1](**kwargs, add_self_loops=loops)
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


def test_gatv2_edge_attr_without_edge_dim_raises_like_pyg():
    cfg = Config(form='long', edge='none', loops=True, inputs='x', layer='gatv2')
    pyg, ours = make_pair(cfg)
    inputs = make_inputs(cfg)
    edge_attr = torch.randn(inputs.edge_index.size(1), 3, dtype=torch.float64)
    with pytest.raises(AssertionError):
        pyg(inputs.x, inputs.edge_index, edge_attr)
    with pytest.raises(AssertionError, match="built without 'edge_dim'"):
        ours(inputs.x, inputs.edge_index, edge_attr)


# Lazy shapes, flow ###########################################################


@BOTH_LAYERS
@pytest.mark.parametrize('bipartite', [False, True])
def test_lazy_in_channels(bipartite, layer):
    """``in_channels=-1`` (or ``(-1, -1)``): shapes come from the first forward pass; then
    the weights copy over and everything matches PyG."""
    cfg = Config(form='long', edge='d4', loops=not bipartite,
                 inputs='bip' if bipartite else 'x', residual=True, layer=layer)
    kwargs = layer_kwargs(cfg)
    kwargs['in_channels'] = (-1, -1) if bipartite else -1
    pyg = LAYERS[layer][0](**kwargs).double().eval()
    ours = LAYERS[layer][1](**kwargs).double().eval()
    assert repr(ours) == repr(pyg)
    inputs = make_inputs(cfg)
    with torch.no_grad():  # lazy initialisation
        pyg(inputs.x, inputs.edge_index, inputs.edge_attr)
        ours(inputs.x, inputs.edge_index, inputs.edge_attr)
    assert_same_state_dict_and_repr(pyg, ours)
    assert_close_results(run(ours, inputs, cfg.key), run(pyg, make_inputs(cfg), cfg.key), 1e-10)


@BOTH_LAYERS
@pytest.mark.parametrize('form', FORMS)
@pytest.mark.parametrize('loops', [True, False])
def test_flow_target_to_source(form, loops, backend, layer):
    """``flow='target_to_source'``: ``edge_index[0]`` holds the targets. PyG rejects it
    for sparse adjacencies; so does ours, with the same exception type."""
    cfg = Config(form=form, edge='none' if form in SPARSE_FORMS else 'd4', loops=loops,
                 inputs='x', graph='isolated', layer=layer)
    kwargs = dict(layer_kwargs(cfg), flow='target_to_source')
    torch.manual_seed(0)
    device = backend
    pyg = LAYERS[layer][0](**kwargs).to(device, torch.float64).eval()
    ours = LAYERS[layer][1](**kwargs).to(device, torch.float64).eval()
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


@BOTH_LAYERS
def test_torch_compile_fullgraph(layer):
    """``torch.compile(model, fullgraph=True)`` (inductor) matches eager, forward and
    backward, for a two-layer model with edge features and self-loops.

    Known limit, not ours: inductor's backward of a model whose *two* layers each remove and
    add self-loops with edge features fails to compile ("For u1 + 12, expected [u1] to
    have been codegen-ed") in torch 2.13, for PyG's GATConv just the same; the data-
    dependent edge count of PyG's `remove_self_loops` is the trigger. So the backward is
    checked on the model without edge features, and the forward on the one with them.
    """
    torch._dynamo.reset()
    conv = LAYERS[layer][1]
    x, edge_index, edge_attr = _small_graph()
    torch.manual_seed(0)
    model = TwoLayerGAT(conv, edge_dim=3).eval()
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, edge_index, edge_attr),
                                   model(x, edge_index, edge_attr))

    torch.manual_seed(0)
    model = TwoLayerGAT(conv).eval()
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


@BOTH_LAYERS
def test_torch_compile_fullgraph_backward_with_edge_features(layer):
    """The backward with edge features, traced in full (``aot_eager``: the same graph
    capture and autograd as inductor, without inductor's code generation)."""
    torch._dynamo.reset()
    x, edge_index, edge_attr = _small_graph()
    edge_attr.requires_grad_()
    torch.manual_seed(0)
    model = TwoLayerGAT(LAYERS[layer][1], edge_dim=3).eval()
    compiled = torch.compile(model, fullgraph=True, backend='aot_eager')
    out = compiled(x, edge_index, edge_attr)
    expected = model(x, edge_index, edge_attr)
    torch.testing.assert_close(out, expected)
    grads = torch.autograd.grad(out.square().sum(), [edge_attr, *model.parameters()])
    ref_grads = torch.autograd.grad(expected.square().sum(), [edge_attr, *model.parameters()])
    for grad, ref in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref, atol=1e-5, rtol=1e-5)


def _copied_models(layer: str):
    torch.manual_seed(0)
    pyg = TwoLayerGAT(conv=LAYERS[layer][0]).double().eval()
    ours = TwoLayerGAT(conv=LAYERS[layer][1]).double().eval()
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


@BOTH_LAYERS
@pytest.mark.parametrize('reduce', ['max', 'mean'])
def test_attention_explainer(reduce, layer):
    from torch_geometric.explain.algorithm import AttentionExplainer
    pyg, ours, x, edge_index = _copied_models(layer)
    index = torch.tensor([0, 3, 7])
    explanation = _explainer(ours, AttentionExplainer(reduce=reduce))(x, edge_index,
                                                                       index=index)
    expected = _explainer(pyg, AttentionExplainer(reduce=reduce))(x, edge_index, index=index)
    assert explanation.edge_mask.shape == (edge_index.size(1), )
    assert explanation.edge_mask.abs().sum() > 0
    torch.testing.assert_close(explanation.edge_mask, expected.edge_mask, atol=1e-10,
                               rtol=1e-10)


@BOTH_LAYERS
def test_gnn_explainer(layer):
    from torch_geometric.explain.algorithm import GNNExplainer
    pyg, ours, x, edge_index = _copied_models(layer)
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


@BOTH_LAYERS
def test_to_hetero(layer):
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
    for conv in LAYERS[layer]:
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
