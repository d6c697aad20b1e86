"""Losses: zero-one, ablation, and marginal contributions computed from the cached prefix."""
import pytest
import torch
import torch.nn.functional as F

from search.losses import (ablation_losses, build_loss, frozen_bn_stats, marginal_contributions,
                           marginal_contributions_full, random_mixing_weights, zero_one_loss)
from search.mixing import MIXINGS
from search.supernet import SuperNet


def tiny_net(layers=4, steps=2, dtype=torch.float64, **kw):
    torch.manual_seed(0)
    return SuperNet(10, in_chans=1, channels=4, layers=layers, steps=steps, **kw).to(dtype)


def batch(n=6, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g, dtype=dtype), torch.randint(0, 10, (n,), generator=g)


def test_zero_one_and_ablation_values():
    assert float(zero_one_loss(torch.zeros(3, 4))) == 0.0
    assert float(zero_one_loss(torch.full((3, 4), 40.0))) == pytest.approx(-0.25)
    assert torch.allclose(ablation_losses(torch.tensor([1.0, 2.0, 3.0])), torch.tensor([0.5, 0.0, -0.5]))
    assert torch.equal(ablation_losses(torch.tensor([1.0, -1.0])), torch.zeros(2))   # mean 0
    sigmoid, softmax = MIXINGS['sigmoid'], MIXINGS['softmax']
    assert float(sigmoid.entropy(torch.zeros(2, 2))) == pytest.approx(0.6931471805599453)
    assert float(sigmoid.entropy(torch.full((2, 2), 50.0))) < 1e-15
    assert float(softmax.entropy(torch.zeros(2, 4))) == pytest.approx(1.3862943611198906)   # log 4: uniform
    assert float(softmax.entropy(torch.tensor([[60.0, 0.0, 0.0, 0.0]]))) < 1e-20
    assert torch.allclose(softmax.weights(torch.randn(3, 5)).sum(1), torch.ones(3))


def test_loss_objects_say_what_they_need():
    fair, abl, grad = (build_loss(name) for name in ('fair', 'ablation', 'ablation-grad'))
    assert (fair.needs_mc, abl.needs_mc, grad.needs_mc) == (False, True, True)
    assert (fair.graph_capture, abl.graph_capture, grad.graph_capture) == (True, True, False)
    assert (fair.w01, fair.w_abl, abl.w_abl) == (7.0, 0.0, 0.5)
    darts = build_loss('fair', 'softmax')   # softmax weights have no zero-one term
    assert darts.w01 == 0.0
    assert darts.meta() == {'loss': 'fair', 'mixing': 'softmax', 'w01': None, 'w_abl': None}
    with pytest.raises(ValueError, match='unknown loss'):
        build_loss('nope')


@pytest.mark.parametrize('batched', [True, False])
def test_marginal_contributions_reuse_equals_full_recomputation(batched):
    net = tiny_net(layers=5, steps=2)
    with torch.no_grad():   # non-trivial alphas: every cell mixes differently
        for k, a in enumerate(net.alphas):
            a.copy_(torch.randn(a.shape, generator=torch.Generator().manual_seed(k), dtype=a.dtype))
    x, y = batch()
    gen = torch.Generator().manual_seed(5)
    rand = [w.double() for w in random_mixing_weights(net, gen)]
    states = []
    full = F.cross_entropy(net(x, states=states), y)
    stats = {k: v.clone() for k, v in net.state_dict().items() if 'running' in k}
    mc = marginal_contributions(net, states, y, full, rand, batched=batched)
    assert not mc.requires_grad and mc.grad_fn is None and mc.shape == (5,)
    ref, losses = marginal_contributions_full(net, x, y, full, rand)
    assert torch.allclose(mc, ref, atol=1e-12, rtol=0), (mc, ref)
    # by hand for one cell: the whole supernet with cell 3 mixing with the random weights
    weights = net.mixing_weights(detach=True)
    weights[3] = rand[3]
    with torch.no_grad(), frozen_bn_stats(net):
        off3 = F.cross_entropy(net(x, weights), y)
    assert float(mc[3]) == pytest.approx(float((full - off3).detach()), abs=1e-12)
    # the ablated passes leave the BN running statistics alone
    for k, v in net.state_dict().items():
        if 'running' in k:
            assert torch.equal(v, stats[k]), k


def test_marginal_contributions_with_shared_alphas():
    net = tiny_net(layers=3, steps=2, cell_groups=[0, 0, 2])
    x, y = batch()
    rand = [w.double() for w in random_mixing_weights(net, torch.Generator().manual_seed(2))]
    states = []
    full = F.cross_entropy(net(x, states=states), y)
    mc = marginal_contributions(net, states, y, full, rand)
    ref, _ = marginal_contributions_full(net, x, y, full, rand)
    assert torch.allclose(mc, ref, atol=1e-12)


def test_detached_ablation_loss_adds_no_gradient():
    """Documented consequence of a detached mc: --loss ablation and --loss fair move alphas identically."""
    net = tiny_net()
    x, y = batch()
    fair_loss, abl_loss = build_loss('fair'), build_loss('ablation')
    fair = fair_loss.gradients(net, x, y)
    abl = abl_loss.gradients(net, x, y, random_mixing_weights(net, torch.Generator().manual_seed(0)))
    assert abl.mc is not None and abl.abl is not None and fair.mc is None
    for g1, g2 in zip(fair.grads, abl.grads):
        assert torch.equal(g1, g2)
    group_of_cell = torch.tensor(net.group_of_cell)
    losses = abl_loss.cell_losses(abl, group_of_cell)   # ... but the loss values differ by w_abl * L_abl_i
    ref = fair_loss.cell_losses(fair, group_of_cell)
    assert [a - b for a, b in zip(losses, ref)] == pytest.approx((0.5 * abl.abl).tolist(), abs=1e-12)
