"""The fused supernet (edges computed per source state) against the per-edge form of the same math.

``SuperNet(fused=False)`` keeps one ``MixedOp`` per edge; ``fuse_()`` stacks its parameters and statistics
into per-source modules.  Both forms must give the same logits, the same gradient for every alpha and
weight, the same BN running statistics, the same marginal contributions and the same short search.
"""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ddarts_zoo import genotypes as shipped
from ddarts_zoo.ops import DARTS_SPACE, OPS, register_op
from search.losses import marginal_contributions, random_mixing_weights, zero_one_loss
from search.supernet import SearchCell, SuperNet

F64 = torch.float64


def per_edge_net(seed=0, dtype=F64, **kw):
    torch.manual_seed(seed)
    kw = {'channels': 4, 'layers': 3, 'steps': 3, **kw}
    net = SuperNet(10, in_chans=3, fused=False, **kw).to(dtype)
    with torch.no_grad():   # every cell mixes differently
        for k, a in enumerate(net.alphas):
            a.copy_(torch.randn(a.shape, generator=torch.Generator().manual_seed(50 + k), dtype=dtype))
    return net


def images(n=4, size=8, dtype=F64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g, dtype=dtype), torch.randint(0, 10, (n,), generator=g)


def warm_up(net, size, steps=2):
    """A few SGD steps in training mode, so that weights and running statistics are not at their init."""
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.1)
    for s in range(steps):
        x, y = images(size=size, dtype=net.alphas[0].dtype, seed=100 + s)
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    net.zero_grad(set_to_none=True)


def pair(warm=True, size=8, **kw):
    """(per-edge net, fused copy with the same parameters and statistics)."""
    ref = per_edge_net(**kw)
    if warm:
        warm_up(ref, size)
    return ref, copy.deepcopy(ref).fuse_()


def grads_in_fused_layout(ref):
    """The per-edge net's parameter gradients, laid out like the fused net's parameters (by name)."""
    g = copy.deepcopy(ref)
    with torch.no_grad():
        for p, q in zip(ref.parameters(), g.parameters()):
            q.copy_(p.grad if p.grad is not None else torch.zeros_like(p))
    return dict(g.fuse_().named_parameters())


def assert_same_grads(ref, net, atol):
    expected = grads_in_fused_layout(ref)
    got = dict(net.named_parameters())
    assert set(expected) == set(got)
    for name, p in got.items():
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        assert torch.allclose(g, expected[name], atol=atol, rtol=0), name


def assert_same_state(ref, net, atol=1e-12):
    expected = copy.deepcopy(ref).fuse_().state_dict()
    got = net.state_dict()
    assert list(expected) == list(got)
    for k, v in got.items():
        assert torch.allclose(v.to(F64), expected[k].to(F64), atol=atol, rtol=0), k


# ---------------------------------------------------------------------------- construction
def test_same_seed_builds_the_same_parameters_in_both_forms():
    ref = per_edge_net()
    torch.manual_seed(0)
    fused = SuperNet(10, in_chans=3, channels=4, layers=3, steps=3).double()
    with torch.no_grad():
        for a, b in zip(fused.alphas, ref.alphas):
            a.copy_(b)
    assert fused.fused and not ref.fused
    assert_same_state(ref, fused, atol=0)
    # every DARTS op is stacked: no per-target fallback, pools computed once per source state
    kinds = {k for cell in fused.cells for src in cell.sources for k in src.kinds}
    assert kinds == {'shared', 'repeat', 'reduce'}      # pools/identity, depthwise-first convs, stride-2 skip
    pool = fused.cells[0].sources[0].ops[0]
    assert isinstance(pool[0], nn.MaxPool2d) and isinstance(pool[1], nn.BatchNorm2d)
    assert len(list(fused.parameters())) < len(list(ref.parameters())) / 2


def test_dartopti_ops_are_all_stacked():
    net = SuperNet.from_baseline(shipped.get('resnet18'), num_classes=10, channels=4)
    kinds = {k for cell in net.cells for src in cell.sources for k in src.kinds}
    assert kinds == {'shared', 'relu', 'repeat', 'reduce'}      # 'relu': ops whose first conv is dense


def assert_same_forward_backward(ref, net, x, y, atol):
    """Same logits, and after a cross-entropy backward the same gradient for every alpha and weight."""
    out_ref, out = ref(x), net(x)
    assert torch.allclose(out, out_ref, atol=atol, rtol=0)
    F.cross_entropy(out_ref, y).backward()
    F.cross_entropy(out, y).backward()
    for a, b in zip(net.alphas, ref.alphas):
        assert torch.allclose(a.grad, b.grad, atol=atol, rtol=0)
    assert_same_grads(ref, net, atol=atol)


# ---------------------------------------------------------------------------- same math
@pytest.mark.parametrize('stem,size', [('cifar', 8), ('imagenet', 32)])
@pytest.mark.parametrize('train', [True, False])
def test_logits_gradients_and_statistics_match(stem, size, train):
    ref, net = pair(size=size, stem=stem)
    ref.train(train)
    net.train(train)
    assert_same_forward_backward(ref, net, *images(size=size, seed=7), atol=1e-10)
    assert_same_state(ref, net)          # running statistics updated alike (train) or untouched (eval)


def test_float32_within_1e5():
    ref, net = pair(dtype=torch.float32)
    assert_same_forward_backward(ref, net, *images(dtype=torch.float32, seed=7), atol=1e-5)


@pytest.mark.parametrize('reduction', [False, True])
def test_cell_with_per_sample_weights(reduction):
    torch.manual_seed(0)
    ref = SearchCell(3, 3, 6, 6, 4, reduction=reduction, reduction_prev=False, op_names=DARTS_SPACE,
                     fused=False).double()
    cell = copy.deepcopy(ref).fuse_()
    g = torch.Generator().manual_seed(3)
    s0, s1 = (torch.randn(5, 6, 8, 8, generator=g, dtype=F64, requires_grad=True) for _ in range(2))
    w = torch.rand(5, 9, 7, generator=g, dtype=F64, requires_grad=True)     # one mixing matrix per sample
    y_ref, y = ref(s0, s1, w), cell(s0, s1, w)
    assert y.shape == (5, 12, 4 if reduction else 8, 4 if reduction else 8)
    assert torch.allclose(y, y_ref, atol=1e-12, rtol=0)
    probe = torch.randn(y.shape, generator=g, dtype=F64)
    grads_ref = torch.autograd.grad((y_ref * probe).sum(), (s0, s1, w))
    grads = torch.autograd.grad((y * probe).sum(), (s0, s1, w))
    for a, b in zip(grads, grads_ref):
        assert torch.allclose(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize('batched', [True, False])
def test_marginal_contributions_with_ghost_groups(batched):
    ref, net = pair(layers=4)
    x, y = images(seed=9)
    rand = random_mixing_weights(net, torch.Generator().manual_seed(4))
    rand = [r.double() for r in rand]
    mcs = []
    for model in (ref, net):
        states = []
        full = F.cross_entropy(model(x, states=states), y)
        mcs.append(marginal_contributions(model, states, y, full, rand, batched=batched))
    assert torch.allclose(mcs[0], mcs[1], atol=1e-10, rtol=0)
    assert mcs[0].abs().max() > 1e-6          # the reruns do change the loss
    assert_same_state(ref, net)              # the ablated passes left every statistic alone in both


def test_dartopti_baseline_supernet_matches():
    base = shipped.get('resnet18')
    torch.manual_seed(0)
    ref = SuperNet.from_baseline(base, num_classes=10, channels=4, fused=False).double()
    warm_up(ref, 8, steps=1)
    net = copy.deepcopy(ref).fuse_()
    assert_same_forward_backward(ref, net, *images(seed=7), atol=1e-10)
    assert_same_state(ref, net)


class _Scale(nn.Module):
    """A registered op that is not a ReLU-conv sequence: it cannot be stacked."""

    def __init__(self, channels):
        super().__init__()
        self.gain = nn.Parameter(1.0 + 0.1 * torch.randn(1, channels, 1, 1))

    def forward(self, x):
        return x * self.gain


def test_unstackable_op_falls_back_to_one_module_per_target():
    name = 'test_fused_scale'
    register_op(name, lambda c, s, a: _Scale(c) if s == 1 else nn.Sequential(nn.AvgPool2d(2), _Scale(c)),
                overwrite=True)
    try:
        ref, net = pair(op_names=('skip_connect', name, 'sep_conv_3x3'))
    finally:
        OPS.pop(name)
    kinds = {k for cell in net.cells for src in cell.sources for k in src.kinds}
    assert kinds == {'shared', 'reduce', 'each', 'repeat'}
    assert_same_forward_backward(ref, net, *images(seed=7), atol=1e-12)


def test_fusing_refuses_pools_whose_statistics_differ():
    ref = per_edge_net()
    with torch.no_grad():
        ref.cells[0].edges[1].ops[0][1].running_mean += 1.0     # edge (2, 1): max pool's BN
    with pytest.raises(ValueError, match='edges from node 1'):
        ref.fuse_()


def test_fused_graph_is_much_smaller():
    ref, net = pair(warm=False)
    x, y = images()

    def graph_size(model):
        seen, todo = set(), [F.cross_entropy(model(x), y).grad_fn]
        while todo:
            f = todo.pop()
            if f is not None and f not in seen:
                seen.add(f)
                todo.extend(n for n, _ in f.next_functions)
        return len(seen)

    assert graph_size(net) < graph_size(ref) / 2


# ---------------------------------------------------------------------------- a short search
def short_search(net, steps=3):
    """Seeded first-order search steps: Adam on the alphas (CE + zero-one), SGD on the weights."""
    arch = torch.optim.Adam(net.arch_parameters(), lr=3e-2)
    weights = torch.optim.SGD(net.weight_parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4)
    for s in range(steps):
        x, y = images(size=8, dtype=net.alphas[0].dtype, seed=200 + s)
        arch.zero_grad()
        loss = F.cross_entropy(net(x), y) + 7.0 * sum(zero_one_loss(a) for a in net.alphas)
        loss.backward()
        arch.step()
        x, y = images(size=8, dtype=net.alphas[0].dtype, seed=300 + s)
        weights.zero_grad()
        F.cross_entropy(net(x, net.mixing_weights(detach=True)), y).backward()
        nn.utils.clip_grad_norm_(net.weight_parameters(), 5.0)
        weights.step()
    return [a.detach().clone() for a in net.alphas]


@pytest.mark.parametrize('dtype,atol', [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_seeded_short_search_gives_the_same_alphas(dtype, atol):
    ref, net = pair(warm=False, dtype=dtype)
    for a, b in zip(short_search(net), short_search(ref)):
        assert torch.allclose(a, b, atol=atol, rtol=0)
    assert_same_state(ref, net, atol=atol)


def test_channels_last_inputs_give_the_same_result():
    ref, net = pair(warm=False)
    net = net.to(memory_format=torch.channels_last)
    x, y = images(seed=7)
    out = net(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(out, ref(x), atol=1e-10, rtol=0)


@pytest.mark.cuda
def test_cuda_matches_and_forward_backward_captures_in_a_cuda_graph():
    """No host synchronisation and static shapes: the fused step can be captured as one CUDA graph."""
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        ref, net = (m.cuda() for m in pair(warm=False, dtype=torch.float32))
        eager = copy.deepcopy(net)
        x, y = (t.cuda() for t in images(dtype=torch.float32, seed=7))
        assert torch.allclose(net(x), ref(x), atol=1e-4, rtol=0)
        static_x, static_y = x.clone(), y.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):           # warm-up outside the graph
            for _ in range(2):
                net.zero_grad(set_to_none=True)
                F.cross_entropy(net(static_x), static_y).backward()
        torch.cuda.current_stream().wait_stream(side)
        net.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_logits = net(static_x)
            F.cross_entropy(static_logits, static_y).backward()
        x2, y2 = (t.cuda() for t in images(dtype=torch.float32, seed=8))
        static_x.copy_(x2)
        static_y.copy_(y2)
        graph.replay()
        torch.cuda.synchronize()
        out = eager(x2)
        F.cross_entropy(out, y2).backward()
        assert torch.allclose(static_logits, out, atol=1e-4, rtol=0)
        for (name, p), q in zip(net.named_parameters(), eager.parameters()):
            assert torch.allclose(p.grad, q.grad, atol=1e-4, rtol=1e-3), name
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
