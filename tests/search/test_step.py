"""The step's mechanics: one fused Adam for every alpha group, device-side statistics, CUDA graphs."""
import pytest
import torch

from search.arch_optimizer import ArchOptimizer
from search.epoch_stats import EpochStats
from search_configs import tiny
from search.reference import build_agents
from search.searcher import Searcher
from search.supernet import SuperNet



def random_grads(net, step):
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(a.shape, generator=g) * (k + 1) for k, a in enumerate(net.alphas)]


@pytest.mark.parametrize('groups', [None, [0, 0, 2]])
def test_one_multi_tensor_adam_equals_one_adam_per_group(groups):
    nets = [SuperNet(10, in_chans=1, channels=2, layers=3, steps=2, cell_groups=groups) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    fused = ArchOptimizer(nets[0].arch_parameters(), lr=3e-2, epochs=5, lr_min=1e-3)
    per_group = build_agents(nets[1], lr=3e-2, epochs=5, lr_min=1e-3)
    for step in range(9):
        for a, g in zip(nets[0].alphas, random_grads(nets[0], step)):
            a.grad = g
        fused.optimizer.step()
        for agent, g in zip(per_group, random_grads(nets[1], step)):
            agent.alpha.grad = g
            agent.optimizer.step()
        if step % 3 == 2:   # an epoch ends: every group's cosine schedule advances
            fused.scheduler.step()
            for agent in per_group:
                agent.scheduler.step()
        assert [g['lr'] for g in fused.optimizer.param_groups] == \
            [a.optimizer.param_groups[0]['lr'] for a in per_group]
    for a, b in zip(nets[0].alphas, nets[1].alphas):
        assert torch.allclose(a, b, rtol=0, atol=1e-6), (a - b).abs().max()
    assert max(float(a.detach().abs().max()) for a in nets[0].alphas) > 0.1   # they did move



def test_epoch_statistics_equal_per_step_host_reads(tmp_path):
    """The device-side statistics give the epoch means that reading every step's numbers gives."""
    s = Searcher(tiny(tmp_path, 'stats', max_steps_per_epoch=4))
    seen = {'arch': [], 'weight': []}
    arch_step, weight_step = s.updates.arch_step, s.updates.weight_step

    def arch(*args):
        res = arch_step(*args)
        if res is not None:   # the old way: host numbers at every step
            cells = res.ce.item() + s.cfg.w01 * res.l01.double()[list(s.net.group_of_cell)]
            seen['arch'].append((res.ce.item(), int(res.correct), res.count,
                                 (cells + s.cfg.w_abl * res.abl.double()).tolist(), res.l01.tolist(), res.mc.tolist()))
        return res

    def weight(*args):
        res = weight_step(*args)
        seen['weight'].append((float(res.loss), int(res.correct), res.count))
        return res

    s.updates.arch_step, s.updates.weight_step = arch, weight
    rec = s.train_epoch(0)
    n = len(seen['arch'])
    assert n == 4 and len(seen['weight']) == 4
    assert rec['train_loss'] == pytest.approx(sum(w[0] for w in seen['weight']) / 4)
    assert rec['train_acc'] == pytest.approx(sum(w[1] for w in seen['weight']) / sum(w[2] for w in seen['weight']))
    assert rec['arch_ce'] == pytest.approx(sum(a[0] for a in seen['arch']) / n)
    assert rec['arch_acc'] == pytest.approx(sum(a[1] for a in seen['arch']) / sum(a[2] for a in seen['arch']))
    for key, col in (('cell_loss', 3), ('l01', 4), ('mc', 5)):
        expected = [sum(a[col][i] for a in seen['arch']) / n for i in range(len(seen['arch'][0][col]))]
        assert rec[key] == pytest.approx(expected), key


@pytest.mark.parametrize('loss', ['fair', 'ablation'])
def test_one_host_read_per_update(tmp_path, monkeypatch, loss):
    """The project's own code reads device values once per update (its finite flags); statistics stay tensors."""
    import traceback
    s = Searcher(tiny(tmp_path, f'reads-{loss}', loss=loss))
    x, y = next(iter(s.a_loader))
    stats = EpochStats(s.net, s.updates.loss)
    s.updates.arch_step(x, y, 0, 0)
    s.updates.weight_step(x, y, 0, 0)
    reads = []
    for name in ('item', 'tolist', '__bool__', '__float__', '__int__', '__index__', 'numpy', 'cpu'):
        def counted(self, *args, _real=getattr(torch.Tensor, name), _name=name, **kw):
            caller = traceback.extract_stack(limit=2)[0]
            if '/torch/' not in caller.filename:   # torch's own (e.g. the CPU step counter of Adam) excluded
                reads.append(f'{_name} at {caller.filename}:{caller.lineno}')
            return _real(self, *args, **kw)
        monkeypatch.setattr(torch.Tensor, name, counted)
    stats.add_arch(s.updates.arch_step(x, y, 0, 1), 1)
    stats.add_weight(s.updates.weight_step(x, y, 0, 1), 1)
    monkeypatch.undo()
    assert len(reads) == 2, reads


@pytest.mark.cuda
@pytest.mark.parametrize('loss', ['fair', 'ablation'])
def test_cuda_graph_steps_equal_eager_steps(tmp_path, loss):
    runs = {}
    for graphs in (False, True):
        s = Searcher(tiny(tmp_path, f'{loss}-{graphs}', device='cuda', loss=loss, cuda_graphs=graphs))
        batches = [tuple(t.cuda() for t in b) for b, _ in zip(s.a_loader, range(6))]
        mcs = []
        for k, (x, y) in enumerate(batches):   # 2 warm-up calls, the capture, then replays
            res = s.updates.arch_step(x, y, 0, k)
            mcs.append(None if res.mc is None else res.mc.clone())
            s.updates.weight_step(x, y, 0, k)
        runs[graphs] = (s, mcs)
    (eager, mc_e), (graphed, mc_g) = runs[False], runs[True]
    assert graphed.updates.graphs and not eager.updates.graphs
    for a, b in zip(eager.net.state_dict().values(), graphed.net.state_dict().values()):
        assert torch.allclose(a.double(), b.double(), rtol=1e-4, atol=1e-5)
    for a, b in zip(mc_e, mc_g):
        assert (a is None and b is None) or torch.allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.cuda
def test_cuda_infrastructure_paths():
    """The CUDA branches of the shared infrastructure: device selection, AMP defaults, RNG state round trip."""
    from ddarts_zoo.utils.amp import amp_dtype, make_grad_scaler
    from ddarts_zoo.utils.dist import init_distributed
    from ddarts_zoo.utils.seed import capture_rng_state, restore_rng_state
    ctx = init_distributed('cuda')
    assert ctx.device.type == 'cuda' and not ctx.enabled
    assert amp_dtype(ctx.device) == torch.float16 and make_grad_scaler(ctx.device, True).is_enabled()
    gen = torch.Generator(device='cuda').manual_seed(3)
    state = capture_rng_state({'mc': gen})
    first = (torch.rand(4, device='cuda'), torch.rand(4, device='cuda', generator=gen))
    restore_rng_state(state, {'mc': gen})
    again = (torch.rand(4, device='cuda'), torch.rand(4, device='cuda', generator=gen))
    assert all(torch.equal(a, b) for a, b in zip(first, again))


@pytest.mark.cuda
@pytest.mark.parametrize('graphs', [False, True])
def test_one_host_sync_per_update_on_cuda(tmp_path, graphs):
    """Each update reads its finite flags once; nothing else waits for the GPU (torch's sync debug mode)."""
    import warnings
    s = Searcher(tiny(tmp_path, f'sync-{graphs}', device='cuda', loss='ablation', cuda_graphs=graphs))
    x, y = (t.cuda() for t in next(iter(s.a_loader)))
    stats = EpochStats(s.net, s.updates.loss)
    for k in range(4):   # lazy state (scalers, optimizer buffers, cuDNN plans) and, with graphs, the capture
        s.updates.arch_step(x, y, 0, k)
        s.updates.weight_step(x, y, 0, k)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        torch.cuda.set_sync_debug_mode('warn')
        try:
            stats.add_arch(s.updates.arch_step(x, y, 0, 4), 4)
            stats.add_weight(s.updates.weight_step(x, y, 0, 4), 4)
        finally:
            torch.cuda.set_sync_debug_mode('default')
    syncs = [str(w.message) for w in caught if 'synchroniz' in str(w.message).lower()]
    assert len(syncs) <= 2, syncs   # the finite flags of the two updates
