"""The dense pyGAT-style oracle (gat_pyg.nn.dense) against GATConv and the sparse model."""
from typing import Iterator, List, Tuple

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode
from torch_geometric.utils import coalesce, remove_self_loops, subgraph, to_undirected

from gat_pyg.nn import GATConv, dense, models
from gat_pyg.nn.dense import GATLayer
from gat_pyg.nn.models.gat import load_dense_heads

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
DTYPES = [torch.float32, torch.float64]
# (symmetric, isolated nodes that keep only their self-loop)
GRAPHS = [(False, 0), (True, 0), (False, 5), (True, 5)]
GRAPH_IDS = ['asymmetric', 'symmetric', 'asymmetric-isolated', 'symmetric-isolated']


@pytest.fixture(scope='module', autouse=True)
def one_thread() -> Iterator[None]:
    """The module runs on one thread: on a busy 2-core machine, OpenMP threads competing
    with other processes slow these small ops down by an order of magnitude. (Results do
    not depend on it: every tolerance holds for any thread count.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def random_graph(num_nodes: int, num_edges: int, symmetric: bool, num_isolated: int = 0,
                 seed: int = 0) -> Tensor:
    """A coalesced ``edge_index`` without self-loops (GATConv adds them), whose
    ``num_isolated`` randomly placed nodes have no edges."""
    gen = torch.Generator().manual_seed(seed)
    connected = torch.randperm(num_nodes, generator=gen)[:num_nodes - num_isolated]
    pick = torch.randint(0, connected.numel(), (2, num_edges), generator=gen)
    edge_index, _ = remove_self_loops(connected[pick])
    if symmetric:
        return to_undirected(edge_index, num_nodes=num_nodes)
    return coalesce(edge_index, num_nodes=num_nodes)


def dense_adj(edge_index: Tensor, num_nodes: int, weighted: bool = False,
              dtype: torch.dtype = torch.float32) -> Tensor:
    """``adj[i, j] > 0`` iff ``(j, i)`` is an edge or ``i == j``; ``weighted`` draws
    random positive entries (only their sign matters)."""
    adj = torch.zeros(num_nodes, num_nodes, dtype=dtype)
    values = (torch.rand(edge_index.size(1), dtype=dtype) + 0.1 if weighted else 1.0)
    adj[edge_index[1], edge_index[0]] = values
    adj.fill_diagonal_(1.0)
    return adj


def graph(symmetric: bool, num_isolated: int, dtype: torch.dtype = torch.float32,
          num_nodes: int = 30, num_edges: int = 90,
          in_features: int = 7) -> Tuple[Tensor, Tensor, Tensor]:
    edge_index = random_graph(num_nodes, num_edges, symmetric, num_isolated)
    if not symmetric:
        adj = dense_adj(edge_index, num_nodes)
        assert not torch.equal(adj, adj.t())
    x = torch.randn(num_nodes, in_features, dtype=dtype)
    return x, edge_index, dense_adj(edge_index, num_nodes, weighted=True, dtype=dtype)


# Parity with GATConv ########################################################


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('symmetric,num_isolated', GRAPHS, ids=GRAPH_IDS)
@pytest.mark.parametrize('concat', [True, False])
def test_layer_matches_one_gatconv_head(dtype, symmetric, num_isolated, concat):
    torch.manual_seed(1)
    x, edge_index, adj = graph(symmetric, num_isolated, dtype)
    layer = GATLayer(7, 5, dropout=0.6, alpha=0.2, concat=concat).to(dtype).eval()
    conv = GATConv(7, 5, heads=1, negative_slope=0.2, dropout=0.6).to(dtype).eval()
    load_dense_heads(conv, [layer])

    expected = layer(x, adj)
    out = conv(x, edge_index)
    out = F.elu(out) if concat else out
    assert out.shape == expected.shape == (30, 5)
    torch.testing.assert_close(out, expected, atol=TOL[dtype], rtol=TOL[dtype])


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('symmetric,num_isolated', GRAPHS, ids=GRAPH_IDS)
@pytest.mark.parametrize('concat', [True, False])
def test_heads_match_multi_head_gatconv(dtype, symmetric, num_isolated, concat):
    torch.manual_seed(2)
    x, edge_index, adj = graph(symmetric, num_isolated, dtype)
    layers = [GATLayer(7, 4, dropout=0.6, alpha=0.1, concat=concat).to(dtype).eval()
              for _ in range(3)]
    conv = GATConv(7, 4, heads=3, concat=concat, negative_slope=0.1,
                   dropout=0.6).to(dtype).eval()
    load_dense_heads(conv, layers)

    if concat:  # hidden heads: ELU each, concatenated
        expected = torch.cat([layer(x, adj) for layer in layers], dim=1)
        out = F.elu(conv(x, edge_index))
    else:  # averaged heads
        expected = torch.stack([layer(x, adj) for layer in layers]).mean(dim=0)
        out = conv(x, edge_index)
    torch.testing.assert_close(out, expected, atol=TOL[dtype], rtol=TOL[dtype])


def test_weight_mapping():
    """a[:F] weighs the target (row i) -> att_dst; a[F:] the source (column j) -> att_src;
    W_k -> rows k*F:(k+1)*F of lin.weight."""
    dense_model = dense.GAT(6, 4, 3, dropout=0.5, alpha=0.2, nheads=2)
    model = models.GAT.from_dense(dense_model)
    for k, head in enumerate(dense_model.attentions):
        assert torch.equal(model.conv1.lin.weight[4 * k:4 * (k + 1)], head.W.t())
        assert torch.equal(model.conv1.att_dst[0, k], head.a[:4, 0])
        assert torch.equal(model.conv1.att_src[0, k], head.a[4:, 0])
    assert torch.equal(model.conv2.lin.weight, dense_model.out_att.W.t())
    assert torch.equal(model.conv2.att_dst[0, 0], dense_model.out_att.a[:3, 0])
    assert torch.equal(model.conv2.att_src[0, 0], dense_model.out_att.a[3:, 0])
    assert not model.conv1.bias.any() and not model.conv2.bias.any()
    assert (model.dropout, model.alpha, model.nheads) == (0.5, 0.2, 2)

    # The inverse mapping recovers the dense weights exactly.
    back = model.to_dense()
    for (name, p), (name_back, p_back) in zip(dense_model.named_parameters(),
                                              back.named_parameters()):
        assert name == name_back and torch.equal(p, p_back)


def test_load_dense_checks_sizes():
    model = models.GAT(6, 4, 3, dropout=0.5, alpha=0.2, nheads=2)
    with pytest.raises(ValueError, match='Shape mismatch'):
        model.load_dense(dense.GAT(6, 4, 3, dropout=0.5, alpha=0.2, nheads=3))
    with pytest.raises(ValueError, match='Shape mismatch'):
        model.load_dense(dense.GAT(5, 4, 3, dropout=0.5, alpha=0.2, nheads=2))
    with pytest.raises(TypeError):
        model.load_dense(models.GAT(6, 4, 3, dropout=0.5, alpha=0.2, nheads=2))
    with pytest.warns(UserWarning, match='alpha'):
        model.load_dense(dense.GAT(6, 4, 3, dropout=0.5, alpha=0.1, nheads=2))


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('symmetric,num_isolated', GRAPHS, ids=GRAPH_IDS)
def test_dense_model_matches_sparse_model(dtype, symmetric, num_isolated):
    torch.manual_seed(3)
    x, edge_index, adj = graph(symmetric, num_isolated, dtype, in_features=9)
    dense_model = dense.GAT(9, 6, 4, dropout=0.6, alpha=0.2, nheads=3).to(dtype).eval()
    model = models.GAT.from_dense(dense_model).eval()
    assert model.conv1.lin.weight.dtype == dtype

    x_dense = x.clone().requires_grad_()
    x_sparse = x.clone().requires_grad_()
    expected = dense_model(x_dense, adj)
    out = model(x_sparse, edge_index)
    torch.testing.assert_close(out, expected, atol=TOL[dtype], rtol=TOL[dtype])

    weight = torch.randn_like(out)
    (expected * weight).sum().backward()
    (out * weight).sum().backward()
    torch.testing.assert_close(x_sparse.grad, x_dense.grad, atol=TOL[dtype],
                               rtol=TOL[dtype])


def test_fresh_sparse_model_matches_its_dense_copy():
    torch.manual_seed(4)
    x, edge_index, adj = graph(False, 3, in_features=9)
    model = models.GAT(9, 6, 4, dropout=0.6, alpha=0.2, nheads=3).eval()
    assert not model.conv1.bias.any() and not model.conv2.bias.any()
    torch.testing.assert_close(model(x, edge_index), model.to_dense().eval()(x, adj),
                               atol=1e-5, rtol=1e-5)


def test_torch_sparse_adjacency():
    torch.manual_seed(5)
    x, _, adj = graph(False, 2)
    layer = GATLayer(7, 5, dropout=0.0, alpha=0.2)
    torch.testing.assert_close(layer(x, adj.to_sparse()), layer(x, adj))


def test_isolated_row_without_self_loop_is_uniform():
    """pyGAT's masking: a row with no neighbour at all attends to every node equally."""
    torch.manual_seed(6)
    x = torch.randn(6, 3)
    adj = torch.eye(6)
    adj[2, 2] = 0.0
    layer = GATLayer(3, 4, dropout=0.0, alpha=0.2, concat=False)
    out = layer(x, adj)
    torch.testing.assert_close(out[2], (x @ layer.W).mean(dim=0))


# Memory: no N x N x 2F tensor ###############################################


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor (in elements) produced by any ATen op."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0
        self.num_ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.num_ops += 1
        for leaf in pytree.tree_leaves(out):
            if isinstance(leaf, Tensor):
                self.largest = max(self.largest, leaf.numel())
        return out


def test_dense_layer_never_builds_pairwise_feature_tensor():
    num_nodes, out_features = 2000, 16
    torch.manual_seed(7)
    x = torch.randn(num_nodes, 8)
    adj = (torch.rand(num_nodes, num_nodes) < 0.01).float()
    layer = GATLayer(8, out_features, dropout=0.5, alpha=0.2).train()
    with LargestTensor() as forward_mode:
        out = layer(x, adj)
    assert forward_mode.largest <= num_nodes * num_nodes
    with LargestTensor() as backward_mode:
        out.sum().backward()
    assert backward_mode.num_ops > 0  # the mode sees the backward ops
    assert backward_mode.largest <= num_nodes * num_nodes
    assert layer.W.grad is not None and layer.a.grad is not None


def test_largest_tensor_catches_pairwise_concatenation():
    """The probe works: the first pyGAT version's all-pairs concatenation is caught."""
    num_nodes, out_features = 50, 4
    layer = GATLayer(3, out_features, dropout=0.0, alpha=0.2)
    x = torch.randn(num_nodes, 3)
    with LargestTensor() as mode:
        Wh = x @ layer.W
        pairs = torch.cat([Wh.repeat_interleave(num_nodes, dim=0), Wh.repeat(num_nodes, 1)],
                          dim=1).view(num_nodes, num_nodes, 2 * out_features)
        e = F.leaky_relu((pairs @ layer.a).squeeze(2), 0.2)
    assert mode.largest == num_nodes * num_nodes * 2 * out_features
    torch.testing.assert_close(e, layer.scores(Wh))


# Dropout and determinism ####################################################


def test_training_dropout_and_eval_determinism():
    torch.manual_seed(8)
    x, edge_index, adj = graph(True, 0, in_features=9)
    layer = GATLayer(9, 5, dropout=0.5, alpha=0.2)
    dense_model = dense.GAT(9, 6, 4, dropout=0.5, alpha=0.2, nheads=2)
    model = models.GAT.from_dense(dense_model)

    for module, args in ((layer, (x, adj)), (dense_model, (x, adj)),
                         (model, (x, edge_index))):
        module.train()
        assert not torch.allclose(module(*args), module(*args))
        module.eval()
        first = module(*args)
        assert torch.equal(first, module(*args))

    # Without dropout, training mode is eval mode.
    layer.dropout = 0.0
    torch.testing.assert_close(layer.train()(x, adj), layer.eval()(x, adj))


# Input validation ###########################################################


@pytest.mark.parametrize('module_name', ['layer', 'model'])
def test_bad_inputs_raise_value_error(module_name):
    module = (GATLayer(7, 5, dropout=0.0, alpha=0.2) if module_name == 'layer' else
              dense.GAT(7, 5, 3, dropout=0.0, alpha=0.2, nheads=2))
    x, adj = torch.randn(10, 7), torch.eye(10)
    module(x, adj)  # fine
    with pytest.raises(ValueError, match=r"'adj' of shape \[10, 10\]"):
        module(x, torch.eye(10)[:, :9])
    with pytest.raises(ValueError, match=r"'adj' of shape \[10, 10\]"):
        module(x, torch.eye(11))
    with pytest.raises(ValueError, match=r"'adj' of shape \[10, 10\]"):
        module(x, torch.eye(10).unsqueeze(0))
    with pytest.raises(ValueError, match=r"'adj' of shape \[10, 10\]"):
        module(x, torch.ones(10))
    with pytest.raises(ValueError, match='built for 7 input features'):
        module(torch.randn(10, 6), adj)
    with pytest.raises(ValueError, match='2-D tensor'):
        module(torch.randn(10), adj)


def test_repr():
    assert repr(GATLayer(12, 8, dropout=0.6, alpha=0.2)) == 'GATLayer (12 -> 8)'
    dense_model = dense.GAT(12, 8, 3, dropout=0.6, alpha=0.2, nheads=4)
    assert 'GATLayer (12 -> 8)' in str(dense_model)
    assert 'GATLayer (32 -> 3)' in str(dense_model)
    assert repr(models.GAT(12, 8, 3, dropout=0.6, alpha=0.2, nheads=4)) == \
        'GAT(12, 8, 3, heads=4)'


def test_reset_parameters():
    torch.manual_seed(9)
    dense_model = dense.GAT(6, 4, 3, dropout=0.5, alpha=0.2, nheads=2)
    before = [p.clone() for p in dense_model.parameters()]
    dense_model.reset_parameters()
    assert all(not torch.equal(a, b) for a, b in zip(before, dense_model.parameters()))
    assert sorted(dict(dense_model.named_parameters())) == [
        'attention_0.W', 'attention_0.a', 'attention_1.W', 'attention_1.a', 'out_att.W',
        'out_att.a']  # pyGAT's state_dict keys

    model = models.GAT(6, 4, 3, dropout=0.5, alpha=0.2, nheads=2)
    with torch.no_grad():
        model.conv1.bias.fill_(1.0)
    weight = model.conv1.lin.weight.clone()
    model.reset_parameters()
    assert not model.conv1.bias.any()
    assert not torch.equal(weight, model.conv1.lin.weight)


# Both models learn on Cora ##################################################


def train_steps(model, optimizer, x, graph_arg, y, mask, steps: int) -> None:
    for _ in range(steps):
        model.train()
        optimizer.zero_grad()
        loss = F.nll_loss(model(x, graph_arg)[mask], y[mask])
        loss.backward()
        optimizer.step()


@torch.no_grad()
def evaluate(model, x, graph_arg, y, mask) -> Tuple[float, float]:
    model.eval()
    out = model(x, graph_arg)[mask]
    return F.nll_loss(out, y[mask]).item(), (out.argmax(1) == y[mask]).float().mean().item()


def test_sparse_model_learns_cora(cora):
    data, num_features, num_classes = cora
    torch.manual_seed(0)
    model = models.GAT(num_features, 8, num_classes, dropout=0.6, alpha=0.2, nheads=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.005, weight_decay=5e-4)
    args = (data.x, data.edge_index, data.y)

    start_loss, _ = evaluate(model, *args, data.train_mask)
    train_steps(model, optimizer, *args, data.train_mask, steps=30)
    loss, _ = evaluate(model, *args, data.train_mask)
    assert loss < 0.8 * start_loss

    accuracies: List[float] = []
    for _ in range(0, 170, 10):  # at most 200 epochs in all, stopping once it is there
        _, accuracy = evaluate(model, *args, data.test_mask)
        accuracies.append(accuracy)
        if accuracy > 0.7:
            break
        train_steps(model, optimizer, *args, data.train_mask, steps=10)
    assert max(accuracies) > 0.7, accuracies


def test_dense_model_learns_cora_subgraph(cora):
    """The dense model (O(N^2) per head) trains on the subgraph of Cora's first 400
    nodes, which holds all 140 training nodes."""
    data, num_features, num_classes = cora
    nodes = torch.arange(400)
    assert data.train_mask[400:].sum() == 0
    edge_index, _ = subgraph(nodes, data.edge_index, num_nodes=data.num_nodes)
    adj = dense_adj(edge_index, 400)
    x, y, train_mask = data.x[:400], data.y[:400], data.train_mask[:400]

    torch.manual_seed(0)
    model = dense.GAT(num_features, 8, num_classes, dropout=0.6, alpha=0.2, nheads=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.005, weight_decay=5e-4)
    start_loss, _ = evaluate(model, x, adj, y, train_mask)
    train_steps(model, optimizer, x, adj, y, train_mask, steps=30)
    loss, accuracy = evaluate(model, x, adj, y, train_mask)
    assert loss < 0.8 * start_loss
    assert accuracy > 0.5

    # The trained dense model and its sparse copy still agree on the real graph.
    sparse_model = models.GAT.from_dense(model).eval()
    torch.testing.assert_close(sparse_model(x, edge_index), model.eval()(x, adj),
                               atol=1e-5, rtol=1e-5)
