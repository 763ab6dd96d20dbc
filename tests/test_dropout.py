"""Input dropout with one mask per head (:mod:`gat_pyg.nn.dropout`), as in the GAT paper's
reference code, checked by reading each head's dropped input back through identity
weights, and its gradients. The GAT model's use of it: ``test_gat_model.py``."""
import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn.dense.linear import Linear

from gat_pyg.nn import HeadwiseDropoutLinear, headwise_dropout_linear

HEADS = 4


def _inputs(kind: str, dtype=torch.float64, requires_grad: bool = False) -> torch.Tensor:
    """'sparse': mostly-zero, bag-of-words-like (the sparse path); 'dense': no zeros."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(300, 40, generator=gen, dtype=dtype) + 0.5
    if kind == 'sparse':
        x = x * (torch.rand(300, 40, generator=gen) < 0.1)
    return x.requires_grad_(requires_grad)


def _identity_heads(num_features: int, dtype=torch.float64) -> torch.Tensor:
    # K stacked identities: output block k is head k's dropped input itself.
    return torch.eye(num_features, dtype=dtype).repeat(HEADS, 1)


@pytest.mark.parametrize('kind', ['sparse', 'dense'])
def test_each_head_drops_the_input_with_its_own_mask(kind):
    x, p = _inputs(kind, requires_grad=kind == 'dense'), 0.6
    torch.manual_seed(0)
    out = headwise_dropout_linear(x, _identity_heads(x.size(1)), HEADS, p)
    x = x.detach()
    blocks = out.detach().view(x.size(0), HEADS, x.size(1)).unbind(1)
    kept = []
    for dropped in blocks:
        assert torch.equal(dropped[x == 0], torch.zeros_like(dropped[x == 0]))
        keep = dropped != 0
        torch.testing.assert_close(dropped[keep], x[keep] / (1 - p), rtol=1e-15, atol=0)
        assert abs(keep[x != 0].double().mean().item() - (1 - p)) < 0.05
        kept.append(keep)
    for k in range(1, HEADS):  # independent masks: agreeing on ~p^2 + (1-p)^2 = 52%
        agree = (kept[k] == kept[0])[x != 0].double().mean().item()
        assert 0.42 < agree < 0.62


@pytest.mark.parametrize('kind', ['sparse', 'dense'])
def test_same_seed_same_bits(kind):
    x = _inputs(kind, dtype=torch.float32)
    weight = torch.randn(HEADS * 3, x.size(1))
    results = []
    for _ in range(2):
        torch.manual_seed(7)
        results.append(headwise_dropout_linear(x, weight, HEADS, 0.5))
    assert torch.equal(*results)


@pytest.mark.parametrize('kind', ['sparse', 'dense'])
def test_gradcheck(kind):
    x = _inputs(kind, requires_grad=kind == 'dense')[:30]
    weight = torch.randn(HEADS * 3, x.size(1), dtype=torch.float64, requires_grad=True)

    def project(*inputs):
        torch.manual_seed(3)  # the same masks at every evaluation
        return headwise_dropout_linear(inputs[-1] if kind == 'dense' else x, inputs[0],
                                       HEADS, 0.5)
    inputs = (weight, x) if kind == 'dense' else (weight,)
    assert torch.autograd.gradcheck(project, inputs)


def test_sparse_path_handles_features_that_never_occur():
    # The weight gradient of a feature column with no nonzero entry is zero, not missing.
    x = _inputs('sparse')
    x[:, -5:] = 0
    weight = torch.randn(HEADS * 2, x.size(1), dtype=torch.float64, requires_grad=True)
    headwise_dropout_linear(x, weight, HEADS, 0.5).sum().backward()
    assert weight.grad.shape == weight.shape
    assert torch.equal(weight.grad[:, -5:], torch.zeros(HEADS * 2, 5, dtype=torch.float64))
    empty = torch.zeros(6, x.size(1), dtype=torch.float64)
    assert torch.equal(headwise_dropout_linear(empty, weight, HEADS, 0.5),
                       torch.zeros(6, HEADS * 2, dtype=torch.float64))


@pytest.mark.parametrize('p,training', [(0.5, False), (0.0, True)])
def test_without_dropout_it_is_the_linear_map(p, training):
    x = _inputs('sparse')
    weight = torch.randn(HEADS * 3, x.size(1), dtype=torch.float64)
    assert torch.equal(headwise_dropout_linear(x, weight, HEADS, p, training),
                       F.linear(x, weight))
    assert torch.equal(headwise_dropout_linear(x, weight, HEADS, 1.0),
                       torch.zeros(x.size(0), HEADS * 3, dtype=torch.float64))


@pytest.mark.parametrize('args,message', [
    ((torch.rand(5, 4), torch.rand(8, 3), 2, 0.5), r'x \[N, F\] and weight'),
    ((torch.rand(5), torch.rand(8, 5), 2, 0.5), r'x \[N, F\] and weight'),
    ((torch.rand(5, 4), torch.rand(9, 4), 2, 0.5),
     '9 output channels .* do not split into 2 heads'),
    ((torch.rand(5, 4), torch.rand(8, 4), 0, 0.5),
     '8 output channels .* do not split into 0 heads'),
    ((torch.rand(5, 4), torch.rand(8, 4), 2, 1.5), r'in \[0, 1\]'),
])
def test_bad_input_is_named(args, message):
    with pytest.raises(ValueError, match=message):
        headwise_dropout_linear(*args)


@pytest.mark.parametrize('x,weight', [
    (torch.ones(5, 4, dtype=torch.long), torch.rand(8, 4)),
    (torch.rand(5, 4, dtype=torch.float64), torch.rand(8, 4))])
def test_dtype_mismatch_is_named(x, weight):
    with pytest.raises(TypeError, match='one floating dtype'):
        headwise_dropout_linear(x, weight, 2, 0.5)


def test_from_linear_keeps_parameters_and_draws_no_random_numbers():
    lin = Linear(10, 8, bias=True, weight_initializer='glorot').double()
    state = torch.random.get_rng_state()
    headwise = HeadwiseDropoutLinear.from_linear(lin, heads=2, p=0.3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert headwise.state_dict().keys() == lin.state_dict().keys()
    for name, value in lin.state_dict().items():
        assert torch.equal(headwise.state_dict()[name], value)
        assert headwise.state_dict()[name].dtype == torch.float64
    x = torch.rand(6, 10, dtype=torch.float64)
    assert torch.equal(headwise.eval()(x), lin(x))
    torch.manual_seed(0)
    dropped = headwise.train()(x)
    torch.manual_seed(0)
    assert torch.equal(dropped, headwise_dropout_linear(x, lin.weight, 2, 0.3) + lin.bias)
    assert repr(headwise) == 'HeadwiseDropoutLinear(10, 8, heads=2, p=0.3, bias=True)'
    with pytest.raises(ValueError, match='8 output channels .* do not split into 3 heads'):
        HeadwiseDropoutLinear(10, 8, heads=3, p=0.3)
    with pytest.raises(ValueError, match=r'in \[0, 1\]'):
        HeadwiseDropoutLinear(10, 8, heads=2, p=-0.1)
