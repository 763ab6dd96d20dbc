"""The GAT model's options: one input-dropout mask per head (:mod:`gat_pyg.nn.dropout`)
and the paper's initialisation, on our layer and on PyG's."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn import GATConv as PyGGATConv

from gat_pyg.nn import GATConv, HeadwiseDropoutLinear, headwise_dropout_linear
from gat_pyg.nn.models import GAT
from gat_pyg.training import TrainConfig

LAYERS = pytest.mark.parametrize('conv', [GATConv, PyGGATConv], ids=['ours', 'pyg'])


def _graph():
    gen = torch.Generator().manual_seed(1)
    x = (torch.rand(60, 30, generator=gen) < 0.15).float()
    return x, torch.randint(0, 60, (2, 240), generator=gen)


@LAYERS
def test_gat_with_a_mask_per_head(conv):
    x, edge_index = _graph()
    torch.manual_seed(0)
    shared = GAT(30, 4, 3, 0.6, 0.2, 8, out_heads=2, conv=conv)
    torch.manual_seed(0)
    per_head = GAT(30, 4, 3, 0.6, 0.2, 8, out_heads=2, conv=conv, dropout_per_head=True)
    # Same seed, same initial weights under the same names; the same function in eval.
    assert shared.state_dict().keys() == per_head.state_dict().keys()
    for name, value in shared.state_dict().items():
        assert torch.equal(per_head.state_dict()[name], value)
    assert isinstance(per_head.conv1.lin, HeadwiseDropoutLinear)
    assert per_head.conv2.lin.heads == 2 and per_head.conv2.lin.p == 0.6
    torch.testing.assert_close(per_head.eval()(x, edge_index), shared.eval()(x, edge_index))
    # In training, the input dropout happens in the projection, and only there: with
    # attention dropout off, the first layer equals the layer on the per-head projection.
    per_head.train()
    for module in (per_head.conv1, per_head.conv2):
        module.dropout = 0.0
    torch.manual_seed(5)
    hidden = per_head.layer(0, x, edge_index)
    torch.manual_seed(5)
    projected = headwise_dropout_linear(x, per_head.conv1.lin.weight, 8, 0.6)
    per_head.conv1.lin.eval()  # a plain projection from here: feed it the dropped copy
    expected = F.elu(_layer_on_projection(per_head.conv1, projected, edge_index))
    torch.testing.assert_close(hidden, expected)
    assert repr(per_head) == 'GAT(30, 4, 3, heads=8, dropout_per_head=True)'


def _layer_on_projection(conv, projected, edge_index):
    # The layer's output for a given [N, H*C] projection, through PyG's own message passing.
    reference = PyGGATConv(conv.in_channels, conv.out_channels, heads=conv.heads)
    reference.load_state_dict(conv.state_dict())
    reference.lin.forward = lambda _x: projected
    return reference.eval()(torch.zeros(projected.size(0), conv.in_channels), edge_index)


def test_gat_trains_and_keeps_the_same_bits():
    x, edge_index = _graph()
    y = torch.randint(0, 3, (60,), generator=torch.Generator().manual_seed(2))
    weights = []
    for _ in range(2):
        torch.manual_seed(0)
        model = GAT(30, 4, 3, 0.6, 0.2, 8, dropout_per_head=True)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
        losses = []
        for _ in range(30):
            optimizer.zero_grad()
            loss = F.nll_loss(model(x, edge_index), y)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        assert losses[-1] < losses[0] - 0.2
        weights.append(model.conv1.lin.weight.detach().clone())
    assert torch.equal(*weights)


def test_gat_refuses_what_a_head_mask_cannot_mean():
    with pytest.raises(ValueError, match='dropout_per_head needs residual=False'):
        GAT(30, 4, 3, 0.6, 0.2, 8, residual=True, dropout_per_head=True)
    x, edge_index = _graph()
    model = GAT(30, 4, 3, 0.6, 0.2, 8, dropout_per_head=True)
    with pytest.raises(RuntimeError, match='runs in eval mode'):
        model.layer(0, x, edge_index, num_targets=10)


# The paper's initialisation ###############################################################

@LAYERS
@pytest.mark.parametrize('residual', [False, True])
def test_paper_init_draws_glorot_per_head(conv, residual):
    torch.manual_seed(0)
    model = GAT(30, 4, 3, 0.6, 0.2, 8, out_heads=8, conv=conv, residual=residual,
                init='paper')
    torch.manual_seed(0)
    layers_own = GAT(30, 4, 3, 0.6, 0.2, 8, out_heads=8, conv=conv, residual=residual)
    for layer, own, (fan_in, channels) in ((model.conv1, layers_own.conv1, (30, 4)),
                                           (model.conv2, layers_own.conv2, (32, 3))):
        # Each head's [C, F] block is Glorot on its own fans, a wider bound than the
        # layers' Glorot on the stacked [8C, F] weight, which the test can tell apart.
        bound = math.sqrt(6 / (fan_in + channels))
        assert bound > 1.2 * math.sqrt(6 / (fan_in + 8 * channels))
        weight = layer.lin.weight
        assert 0.95 * bound < weight.abs().max() <= bound
        assert abs(weight.std().item() - bound / math.sqrt(3)) < 0.1 * bound
        att_bound = math.sqrt(6 / (channels + 1))
        assert att_bound > 1.3 * math.sqrt(6 / (8 + channels))
        for att in (layer.att_src, layer.att_dst):
            assert 0.8 * att_bound < att.abs().max() <= att_bound
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
        if residual:  # re-drawn by its own initialiser, after the layers' own draws
            assert not torch.equal(layer.res.weight, own.res.weight)
    assert repr(model).endswith("init='paper')")


def test_paper_init_is_the_same_on_both_layers_and_redrawn_by_reset():
    models = []
    for conv in (GATConv, PyGGATConv):
        torch.manual_seed(1)
        models.append(GAT(30, 4, 3, 0.6, 0.2, 8, conv=conv, init='paper'))
    ours, pyg = models
    for name, value in ours.state_dict().items():
        assert torch.equal(pyg.state_dict()[name], value)
    before = ours.conv1.lin.weight.detach().clone()
    ours.reset_parameters()
    assert not torch.equal(ours.conv1.lin.weight, before)
    assert ours.conv1.lin.weight.abs().max() > 0.95 * math.sqrt(6 / 34)
    with pytest.raises(ValueError, match="Unknown init 'xavier'"):
        GAT(30, 4, 3, 0.6, 0.2, 8, init='xavier')


@pytest.mark.parametrize('dataset,init', [('Cora', 'pyg'), ('CiteSeer', 'pyg'),
                                          ('PubMed', 'paper'), ('Computers', 'pyg')])
def test_the_pubmed_recipe_uses_the_paper_init(dataset, init):
    assert TrainConfig.for_dataset(dataset).init == init
    other = 'pyg' if init == 'paper' else 'paper'
    assert TrainConfig.for_dataset(dataset, init=other).init == other


def test_gatv2_model_on_both_layers_computes_the_same_function():
    """``GAT(..., v2=True)`` is the same model on GATv2's layers; on PyG's GATv2Conv and on
    ours it computes the same function (eval mode), and layer-wise inference equals the
    forward pass."""
    from torch_geometric.nn import GATv2Conv as PyGGATv2Conv

    from gat_pyg.nn import GATv2Conv
    x, edge_index = _graph()
    torch.manual_seed(0)
    ours = GAT(30, 4, 3, dropout=0.5, alpha=0.2, nheads=2, v2=True).double().eval()
    pyg = GAT(30, 4, 3, dropout=0.5, alpha=0.2, nheads=2, v2=True,
              conv=PyGGATv2Conv).double().eval()
    assert isinstance(ours.conv1, GATv2Conv) and isinstance(pyg.conv1, PyGGATv2Conv)
    assert 'v2=True' in repr(ours)
    pyg.load_state_dict(ours.state_dict(), strict=True)
    x = x.double()
    out = ours(x, edge_index)
    torch.testing.assert_close(out, pyg(x, edge_index), atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(ours.inference(x, edge_index, batch_size=16), out,
                               atol=1e-10, rtol=1e-10)


def test_gatv2_model_refuses_the_gat_only_options():
    for kwargs in (dict(dropout_per_head=True), dict(init='paper')):
        with pytest.raises(ValueError, match="are GAT's"):
            GAT(30, 4, 3, dropout=0.5, alpha=0.2, nheads=2, v2=True, **kwargs)
    # The GATv2 recipe keeps the layers' own initialisation, also on PubMed.
    assert TrainConfig.for_dataset('PubMed', conv='gatv2').init == 'pyg'
    with pytest.raises(ValueError, match="are GAT's"):
        TrainConfig.for_dataset('Cora', conv='gatv2', init='paper')
