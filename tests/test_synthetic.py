"""The synthetic power-law graph generator (:func:`gat_pyg.data.synthetic_graph`)."""
import pytest
import torch
import torch.nn.functional as F
from torch_geometric.utils import scatter

from gat_pyg.data import synthetic_graph

FIELDS = ('x', 'edge_index', 'y', 'train_mask', 'val_mask', 'test_mask')


def _same_bits(a, b) -> bool:
    return all(torch.equal(a[name], b[name]) for name in FIELDS)


def _degrees(data) -> torch.Tensor:
    return torch.bincount(data.edge_index[1], minlength=data.num_nodes)


def _edge_homophily(data) -> float:
    src, dst = data.edge_index
    return float((data.y[src] == data.y[dst]).double().mean())


def _hill_exponent(degrees: torch.Tensor, k: int) -> float:
    """Hill's estimate of the exponent gamma of a tail P(d) ~ d^-gamma from the k largest
    values."""
    top = degrees.double().sort(descending=True).values[:k + 1]
    return 1.0 + k / float(torch.log(top[:k] / top[k]).sum())


def test_same_seed_same_bits_other_seed_differs():
    a = synthetic_graph(3000, 20000, num_features=16, seed=5)
    b = synthetic_graph(3000, 20000, num_features=16, seed=5)
    assert _same_bits(a, b)
    c = synthetic_graph(3000, 20000, num_features=16, seed=6)
    for name in FIELDS:
        assert not torch.equal(a[name], c[name]), name


def test_bits_do_not_depend_on_threads():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = synthetic_graph(5000, 3 * (1 << 21) // 2, num_features=8, seed=2)
        torch.set_num_threads(max(threads, 2))
        many = synthetic_graph(5000, 3 * (1 << 21) // 2, num_features=8, seed=2)
    finally:
        torch.set_num_threads(threads)
    assert _same_bits(one, many)  # more than one edge chunk


def test_nodes_and_features_do_not_depend_on_edges():
    a = synthetic_graph(1000, 2000, num_features=8, seed=1)
    b = synthetic_graph(1000, 9000, num_features=8, seed=1, undirected=False)
    for name in ('x', 'y', 'train_mask', 'val_mask', 'test_mask'):
        assert torch.equal(a[name], b[name]), name


@pytest.mark.parametrize('undirected', [True, False])
def test_sizes_dtypes_ranges(undirected):
    n, e, f, k = 1000, 10_002 if undirected else 10_001, 24, 5
    data = synthetic_graph(n, e, num_features=f, num_classes=k, seed=3, undirected=undirected,
                           train_ratio=0.5, val_ratio=0.3)
    assert data.x.shape == (n, f) and data.x.dtype == torch.float32
    assert bool(torch.isfinite(data.x).all())
    assert data.edge_index.shape == (2, e) and data.edge_index.dtype == torch.int64
    assert data.edge_index.is_contiguous()
    assert int(data.edge_index.min()) >= 0 and int(data.edge_index.max()) < n
    assert data.y.shape == (n, ) and data.y.dtype == torch.int64
    counts = torch.bincount(data.y, minlength=k)
    assert counts.numel() == k and int(counts.max() - counts.min()) <= 1  # balanced
    masks = torch.stack([data.train_mask, data.val_mask, data.test_mask])
    assert masks.dtype == torch.bool
    assert bool((masks.sum(0) == 1).all())  # disjoint, covering
    assert masks.sum(1).tolist() == [500, 300, 200]
    assert data.num_nodes == n and data.num_edges == e
    if undirected:
        half = e // 2
        assert torch.equal(data.edge_index[:, half:], data.edge_index[:, :half].flip(0))


def test_no_edges():
    data = synthetic_graph(100, 0, num_features=4)
    assert data.edge_index.shape == (2, 0) and data.edge_index.dtype == torch.int64
    assert data.x.shape == (100, 4)


@pytest.mark.parametrize('homophily', [0.0, 0.5, 1.0])
def test_no_self_loops_even_in_two_node_classes(homophily):
    # Every class has exactly two nodes: a same-class target is the other one.
    data = synthetic_graph(8, 4000, num_features=2, num_classes=4, homophily=homophily,
                           power_law_exponent=2.1, seed=4)
    src, dst = data.edge_index
    assert not bool((src == dst).any())
    data = synthetic_graph(20000, 200000, num_features=2, power_law_exponent=2.1,
                           homophily=homophily, seed=4)
    src, dst = data.edge_index
    assert not bool((src == dst).any())


@pytest.mark.parametrize('homophily', [0.0, 0.3, 0.7, 0.95, 1.0])
def test_edge_homophily_is_the_requested_value(homophily):
    data = synthetic_graph(10000, 200000, num_features=2, homophily=homophily, seed=7)
    measured = _edge_homophily(data)
    if homophily in (0.0, 1.0):
        assert measured == homophily
    else:  # binomial standard deviation <= 0.0016 over 100000 drawn pairs
        assert abs(measured - homophily) < 0.01, measured


def test_power_law_degree_tail():
    heavy = _degrees(synthetic_graph(20000, 200000, num_features=2, seed=0,
                                     power_law_exponent=2.5))
    light = _degrees(synthetic_graph(20000, 200000, num_features=2, seed=0,
                                     power_law_exponent=3.5))
    mean = 10.0
    assert float(heavy.float().mean()) == mean
    assert int(heavy.max()) > 50 * mean  # a Poisson / Erdos-Renyi graph: about 2.5 x mean
    assert int(heavy.max()) > 2 * int(light.max())
    # Hill's estimator over the 500 largest degrees recovers the exponent.
    assert abs(_hill_exponent(heavy, 500) - 2.5) < 0.3
    assert abs(_hill_exponent(light, 500) - 3.5) < 0.4
    # Nearly every node has an edge (every degree weight is at least 1).
    assert float((heavy == 0).float().mean()) < 0.05


@pytest.fixture
def one_thread():
    """Small tensors: one thread (on a busy machine, fanning tiny ops out to several threads
    costs more than it saves)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _logistic_regression_accuracy(features, data, epochs=150):
    gen = torch.Generator().manual_seed(0)
    num_classes = int(data.y.max()) + 1
    weight = (0.01 * torch.randn(features.size(1), num_classes, generator=gen)).requires_grad_()
    bias = torch.zeros(num_classes, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=0.05)
    for _ in range(epochs):
        optimizer.zero_grad()
        logits = features[data.train_mask] @ weight + bias
        F.cross_entropy(logits, data.y[data.train_mask]).backward()
        optimizer.step()
    with torch.no_grad():
        pred = (features @ weight + bias).argmax(1)
    return float((pred == data.y)[data.test_mask].float().mean())


def test_class_signal_is_learnable_but_not_trivial(one_thread):
    data = synthetic_graph(4000, 40000, seed=1)  # 8 classes: chance is 0.125
    own = _logistic_regression_accuracy(data.x, data)
    neighbours = scatter(data.x[data.edge_index[0]], data.edge_index[1], 0,
                         dim_size=data.num_nodes, reduce='mean')
    with_graph = _logistic_regression_accuracy(torch.cat([data.x, neighbours], 1), data)
    assert 0.2 < own < 0.5, own  # the node's own features: weak but real signal
    assert with_graph > own + 0.15, (own, with_graph)  # the graph carries the rest
    # Without feature signal the features say nothing.
    blind = synthetic_graph(4000, 40000, seed=1, feature_signal=0.0)
    assert _logistic_regression_accuracy(blind.x, blind) < 0.18


def test_gat_learns_it(one_thread):
    from gat_pyg.nn.models import GAT
    data = synthetic_graph(2000, 20000, seed=3)
    torch.manual_seed(0)
    model = GAT(128, 8, 8, dropout=0.2, alpha=0.2, nheads=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
    for _ in range(30):
        model.train()
        optimizer.zero_grad()
        out = model(data.x, data.edge_index)
        F.nll_loss(out[data.train_mask], data.y[data.train_mask]).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        pred = model(data.x, data.edge_index).argmax(1)
    accuracy = float((pred == data.y)[data.test_mask].float().mean())
    assert accuracy > 0.6, accuracy  # chance 0.125, own features alone about 0.3


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_nodes=0), 'num_nodes'),
    (dict(num_nodes=10.0), 'num_nodes.*integer'),
    (dict(num_nodes=True), 'num_nodes.*integer'),
    (dict(num_nodes=15, num_classes=8), 'at least 2 \\* num_classes'),
    (dict(num_edges=-2), 'num_edges'),
    (dict(num_edges=11), 'even'),
    (dict(num_features=0), 'num_features'),
    (dict(num_classes=1), 'num_classes'),
    (dict(seed=-1), 'seed'),
    (dict(homophily=1.5), 'homophily'),
    (dict(homophily=float('nan')), 'homophily'),
    (dict(homophily='high'), 'homophily.*number'),
    (dict(power_law_exponent=2.0), 'power_law_exponent'),
    (dict(power_law_exponent=float('inf')), 'power_law_exponent'),
    (dict(feature_signal=-1.0), 'feature_signal'),
    (dict(train_ratio=-0.1), 'train_ratio'),
    (dict(train_ratio=0.7, val_ratio=0.4), 'at most 1'),
    (dict(undirected=1), 'undirected'),
])
def test_bad_arguments_raise_value_errors(kwargs, match):
    args = dict(num_nodes=100, num_edges=100)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        synthetic_graph(**args)


def test_odd_edge_count_is_fine_when_directed():
    data = synthetic_graph(100, 11, undirected=False)
    assert data.edge_index.shape == (2, 11)
