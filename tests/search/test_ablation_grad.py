"""``--loss ablation-grad``: the differentiated ablation loss against plain autograd, finite differences."""
import pytest
import torch
import torch.nn.functional as F

from search.losses import ablation_gradients, ablation_losses, frozen_bn_stats, random_mixing_weights, \
    zero_one_loss
from search.supernet import SuperNet

W01, W_ABL = 7.0, 0.5
SETUPS = {
    'per-cell': dict(layers=4),
    'groups': dict(layers=4, cell_groups=[0, 0, 2, 0]),          # cells 0, 1, 3 share one alpha (DARTOpti)
    'imagenet-stem': dict(layers=3, stem='imagenet'),           # s0 and s1 are different tensors
}


def make_case(setup, seed=0):
    kw = dict(SETUPS[setup])
    size = 16 if kw.get('stem') == 'imagenet' else 8
    torch.manual_seed(seed)
    net = SuperNet(10, in_chans=1, channels=2, steps=2, **kw).double()
    with torch.no_grad():   # every cell mixes differently
        for k, a in enumerate(net.alphas):
            a.copy_(torch.randn(a.shape, generator=torch.Generator().manual_seed(10 + k), dtype=a.dtype))
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(6, 1, size, size, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (6,), generator=g)
    rand = [w.double() for w in random_mixing_weights(net, torch.Generator().manual_seed(seed + 2))]
    return net, x, y, rand


def agent_losses(net, x, y, rand):
    """Every agent's ``L_g`` built the plain way: whole forward passes, every graph kept."""
    ce = F.cross_entropy(net(x), y)
    offs = []
    with frozen_bn_stats(net):
        for j in range(net.layers):
            weights = net.mixing_weights()
            weights[j] = rand[j]
            offs.append(F.cross_entropy(net(x, weights), y))
    mc = ce - torch.stack(offs)
    abl = ablation_losses(mc)
    return [ce + W01 * zero_one_loss(a) + W_ABL * abl[list(net.cells_of_group(k))].mean()
            for k, a in enumerate(net.alphas)], mc


@pytest.mark.parametrize('setup', list(SETUPS))
def test_gradients_equal_plain_autograd_per_agent(setup):
    net, x, y, rand = make_case(setup)
    stats = {k: v.clone() for k, v in net.state_dict().items() if 'running' in k}
    res = ablation_gradients(net, x, y, rand, w01=W01, w_abl=W_ABL)
    # BN running statistics moved exactly once (the full pass), as one plain forward pass moves them
    after = {k: v.clone() for k, v in net.state_dict().items() if 'running' in k}
    net.load_state_dict({**net.state_dict(), **stats})
    with torch.no_grad():
        net(x)
    for k, v in net.state_dict().items():
        if 'running' in k:
            assert torch.allclose(v, after[k], atol=1e-14), k

    losses, mc = agent_losses(net, x, y, rand)
    assert torch.allclose(res.mc, mc.detach(), atol=1e-12, rtol=0)
    assert abs(float(mc.detach().mean())) > 1e-3   # the ablation term is active
    for k, (alpha, loss) in enumerate(zip(net.alphas, losses)):
        (ref,) = torch.autograd.grad(loss, alpha, retain_graph=True)
        assert torch.allclose(res.grads[k], ref, atol=1e-10, rtol=1e-8), (k, (res.grads[k] - ref).abs().max())
        # the ablation term does change the gradient: it is not the fair one
        (fair,) = torch.autograd.grad(F.cross_entropy(net(x), y) + W01 * zero_one_loss(alpha), alpha)
        assert (ref - fair).abs().max() > 1e-6 * ref.abs().max()


@pytest.mark.parametrize('setup', ['per-cell', 'groups'])
def test_gradients_match_finite_differences(setup):
    net, x, y, rand = make_case(setup)
    res = ablation_gradients(net, x, y, rand, w01=W01, w_abl=W_ABL)
    h = 1e-5
    for k, (edge, op) in [(0, (0, 1)), (len(net.alphas) - 1, (3, 4)), (1, (2, 0))]:
        alpha = net.alphas[k]
        vals = []
        for sign in (1, -1):
            with torch.no_grad():
                alpha[edge, op] += sign * h
                vals.append(float(agent_losses(net, x, y, rand)[0][k]))
                alpha[edge, op] -= sign * h
        fd = (vals[0] - vals[1]) / (2 * h)
        assert float(res.grads[k][edge, op]) == pytest.approx(fd, rel=1e-5, abs=1e-8), (k, edge, op)


def test_loss_scale_and_zero_weight():
    net, x, y, rand = make_case('per-cell')
    base = ablation_gradients(net, x, y, rand, w01=W01, w_abl=W_ABL)
    scaled = ablation_gradients(net, x, y, rand, w01=W01, w_abl=W_ABL, scale=lambda t: 8.0 * t)
    for a, b in zip(base.grads, scaled.grads):
        assert torch.allclose(8.0 * a, b, rtol=1e-12, atol=1e-14)
    # w_abl = 0: the fair gradients, with the marginal contributions still reported
    off = ablation_gradients(net, x, y, rand, w01=W01, w_abl=0.0)
    for k, alpha in enumerate(net.alphas):
        (fair,) = torch.autograd.grad(F.cross_entropy(net(x), y) + W01 * zero_one_loss(alpha), alpha)
        assert torch.allclose(off.grads[k], fair, atol=1e-12)
    assert torch.equal(off.mc, base.mc)


def test_reduced_marginal_contributions_set_the_coefficients():
    """Under DDP the coefficients come from the rank-averaged ``mc``; ``mc_reduce`` is what they use."""
    net, x, y, rand = make_case('per-cell')
    shift = torch.tensor([0.3, -0.1, 0.2, 0.05], dtype=torch.float64)
    res = ablation_gradients(net, x, y, rand, w01=W01, w_abl=W_ABL, mc_reduce=lambda mc: mc + shift)
    losses, mc = agent_losses(net, x, y, rand)
    abl = ablation_losses(mc + shift)   # the same Jacobian, coefficients at the shifted point
    for k, alpha in enumerate(net.alphas):
        loss = F.cross_entropy(net(x), y) + W01 * zero_one_loss(alpha) + W_ABL * abl[k]
        (ref,) = torch.autograd.grad(loss, alpha, retain_graph=True)
        assert torch.allclose(res.grads[k], ref, atol=1e-10, rtol=1e-8)


def test_non_finite_loss_returns_no_gradients():
    net, x, y, rand = make_case('per-cell')
    x = x.clone()
    x[0, 0, 0, 0] = float('nan')
    calls = []
    res = ablation_gradients(net, x, y, rand, w01=W01, w_abl=W_ABL,
                             mc_reduce=lambda mc: calls.append(1) or mc)
    assert res.grads == [None] * len(net.alphas) and calls == [1] and torch.isnan(res.mc).all()
    # a diverging ablated pass: NaN gradients (the step is skipped), never the fair ones in disguise
    x, y = make_case('per-cell')[1:3]
    rand[2] = torch.full_like(rand[2], float('inf'))
    res = ablation_gradients(net, x, y, rand, w01=W01, w_abl=W_ABL)
    assert torch.isfinite(res.ce) and torch.isnan(res.mc[2])
    assert all(torch.isnan(g).all() for g in res.grads)


def _search(tmp_path, loss, **kw):
    from search.config import SearchConfig
    from search.presets import preset
    from search.searcher import Searcher
    values = dict(preset('tiny'), out=str(tmp_path), name=loss, loss=loss, epochs=1, max_steps_per_epoch=4,
                  progress=False, tensorboard=False, plots=False, eval=False, preset='tiny')
    values.update(kw)
    searcher = Searcher(SearchConfig(**values))
    result = searcher.run()
    return [a.detach().clone() for a in searcher.net.alphas], result.history


def test_seeded_search_ablation_grad_moves_alphas_ablation_does_not(tmp_path):
    fair, hist_fair = _search(tmp_path, 'fair')
    abl, hist_abl = _search(tmp_path, 'ablation')
    grad, hist_grad = _search(tmp_path, 'ablation-grad')
    assert all(torch.equal(a, b) for a, b in zip(fair, abl))         # the authors' term: no gradient
    assert max(float((a - b).abs().max()) for a, b in zip(fair, grad)) > 1e-4
    assert hist_fair[-1]['mc'] is None
    for hist in (hist_abl, hist_grad):   # marginal contributions logged per cell per epoch
        assert len(hist[-1]['mc']) == 3 and all(v == v for v in hist[-1]['mc'])


def test_authors_reference_rejects_ablation_grad():
    from search.reference import reference_architecture_gradients
    net, x, y, rand = make_case('per-cell')
    with pytest.raises(ValueError, match='ablation-grad'):
        reference_architecture_gradients(net, x, y, loss='ablation-grad', random_weights=rand)
