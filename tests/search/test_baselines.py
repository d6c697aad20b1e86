"""The DARTS / FairDARTS baselines as modes of the same search: ``--cells shared``, ``--mixing softmax``."""
import copy
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ddarts_zoo.errors import UserError
from ddarts_zoo.genotype import Genotype
from ddarts_zoo.utils.dist import DistContext
from search.config import SearchConfig, build_supernet
from search.losses import build_loss, zero_one_loss
from search.searcher import Searcher
from search.step import SearchUpdates
from search.supernet import SuperNet, default_reductions, shared_cell_groups
from search_configs import tiny

ROOT = Path(__file__).resolve().parents[2]


def batch(seed, n=6):
    g = torch.Generator().manual_seed(100 + seed)
    return torch.randn(n, 1, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 10, (n,), generator=g)


def test_shared_groups_follow_the_cell_types():
    assert shared_cell_groups(8, default_reductions(8)) == (0, 0, 2, 0, 0, 2, 0, 0)
    net = build_supernet(SearchConfig(cells='shared', layers=5, channels=2, steps=2), 10, 1)
    assert net.reductions == (1, 3) and net.cell_groups == (0, 1, 0, 1, 0) and len(net.alphas) == 2
    assert net.group_of_cell == (0, 1, 0, 1, 0) and net.cells_of_group(1) == (1, 3)


def test_shared_alpha_gets_the_gradient_of_every_cell_of_its_type():
    """DARTS' tying: the shared alpha's gradient is the sum of what each of its cells would get on its own."""
    torch.manual_seed(0)
    individual = SuperNet(10, in_chans=1, channels=2, layers=4, steps=2).double()
    shared = SuperNet(10, in_chans=1, channels=2, layers=4, steps=2,
                      cell_groups=shared_cell_groups(4, individual.reductions)).double()
    shared.load_state_dict({k: v for k, v in individual.state_dict().items() if not k.startswith('alphas')},
                           strict=False)
    with torch.no_grad():
        for a in shared.alphas:
            a.copy_(torch.randn(a.shape, generator=torch.Generator().manual_seed(a.numel()), dtype=a.dtype))
        for i in range(4):
            individual.alphas[i].copy_(shared.alpha_of_cell(i))
    x, y = batch(0)
    res = build_loss('fair').gradients(shared, x, y)
    ce = F.cross_entropy(individual(x), y)
    per_cell = torch.autograd.grad(ce, list(individual.alphas))
    for k, alpha in enumerate(shared.alphas):
        (l01,) = torch.autograd.grad(7.0 * zero_one_loss(alpha), alpha)
        expected = sum(per_cell[i] for i in shared.cells_of_group(k)) + l01
        assert torch.allclose(res.grads[k], expected, atol=1e-12, rtol=1e-10), k


@pytest.mark.parametrize('loss', ['fair', 'ablation-grad'])
def test_shared_search_keeps_the_cells_of_a_type_identical(tmp_path, loss):
    s = Searcher(tiny(tmp_path, f'shared-{loss}', cells='shared', layers=4, loss=loss, epochs=1,
                      max_steps_per_epoch=4, eval=False))
    init = [a.detach().clone() for a in s.net.alphas]
    result = s.run()
    assert len(s.net.alphas) == 2 and s.net.reductions == (1, 2)
    for cells in ((0, 3), (1, 2)):   # normal cells, reduction cells
        first = s.net.alpha_of_cell(cells[0]).detach()
        assert all(torch.equal(s.net.alpha_of_cell(i).detach(), first) for i in cells)
    assert all((a.detach() - b).abs().max() > 1e-3 for a, b in zip(s.net.alphas, init))   # they did move
    for geno in result.genotypes.values():
        assert geno.genes[0] == geno.genes[3] and geno.genes[1] == geno.genes[2]
        assert geno.meta['cells'] == 'shared'


def darts_logits(net, x, alphas):
    """A plain DARTS forward pass written out: softmax-weighted sums of each edge's ops (per-edge modules)."""
    s0 = s1 = net.stem(x)
    for i, cell in enumerate(net.cells):
        w = torch.softmax(alphas[net.group_of_cell[i]], dim=-1)
        states, row = [cell.preprocess0(s0), cell.preprocess1(s1)], 0
        for _ in range(cell.steps):
            node = 0
            for h in list(states):
                node = node + sum(w[row, k] * op(h) for k, op in enumerate(cell.edges[row].ops))
                row += 1
            states.append(node)
        s0, s1 = s1, torch.cat(states[-cell.multiplier:], dim=1)
    return net.classifier(torch.flatten(net.global_pooling(s1), 1))


def test_softmax_shared_fair_is_a_plain_first_order_darts_step():
    """``--cells shared --mixing softmax --loss fair``: the search's alpha updates equal a plain first-order
    DARTS step (softmax mixed ops, cross entropy only, autograd, one Adam over both alphas)."""
    torch.manual_seed(0)
    groups = shared_cell_groups(4, default_reductions(4))
    plain = SuperNet(10, in_chans=1, channels=2, layers=4, steps=2, cell_groups=groups, mixing='softmax',
                     fused=False).double()
    with torch.no_grad():
        for a in plain.alphas:
            a.normal_(0.0, 0.5)
    fused = copy.deepcopy(plain).fuse_()
    cfg = SearchConfig(cells='shared', mixing='softmax', parse='darts', loss='fair', arch_lr=0.05, w01=7.0)
    updates = SearchUpdates(fused, cfg, DistContext(device=torch.device('cpu')))
    ref = [torch.nn.Parameter(a.detach().clone()) for a in plain.alphas]
    adam = torch.optim.Adam(ref, lr=cfg.arch_lr, betas=cfg.arch_betas, weight_decay=cfg.arch_weight_decay)
    for step in range(3):
        x, y = batch(step)
        res = updates.arch_step(x, y, 0, step)
        assert res is not None and res.mc is None and float(res.l01.abs().sum()) == 0.0
        grads = torch.autograd.grad(F.cross_entropy(darts_logits(plain, x, ref), y), ref)
        for a, g in zip(ref, grads):
            a.grad = g
        adam.step()
        for a, b in zip(fused.alphas, ref):
            assert torch.allclose(a.detach(), b.detach(), rtol=0, atol=1e-10), (step, (a - b).abs().max())
    with torch.no_grad():   # they did move
        assert max(float((a - b).abs().max()) for a, b in zip(fused.alphas, plain.alphas)) > 0.1


def test_method_options_are_checked():
    with pytest.raises(UserError, match='--parse sparse does not fit --mixing softmax'):
        SearchConfig(mixing='softmax').check()
    with pytest.raises(UserError, match='--cells shared cannot be combined with --baseline'):
        SearchConfig(cells='shared', baseline='resnet18').check()
    for field, value in (('cells', 'tied'), ('mixing', 'gumbel'), ('loss', 'darts')):
        with pytest.raises(UserError, match=f'--{field} {value!r}'):
            SearchConfig(**{field: value}).check()
    SearchConfig(mixing='softmax', parse='darts', cells='shared').check()


@pytest.mark.slow
def test_darts_mode_from_the_command_line_then_its_training_command(tmp_path):
    """``--cells shared --mixing softmax``: darts genotypes only, the summary, a training command that runs."""
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT))
    cmd = [sys.executable, 'search/run.py', '--preset', 'tiny', '--layers', '4', '--epochs', '1',
           '--cells', 'shared', '--mixing', 'softmax', '--loss', 'fair', '--out', str(tmp_path),
           '--name', 'darts', '--no-progress', '--no-tensorboard']
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = tmp_path / 'darts'
    assert sorted(p.name for p in run.glob('genotype*.json')) == ['genotype.json', 'genotype_darts.json']
    geno = Genotype.load(run / 'genotype.json')
    assert geno.meta['parsing'] == 'darts' and geno.meta['mixing'] == 'softmax' and geno.meta['w01'] is None
    assert all(len(gene) == 4 for gene in geno.genes)   # darts parsing: 2 edges for each of the 2 nodes
    assert geno.genes[0] == geno.genes[3] and geno.genes[1] == geno.genes[2]
    out = proc.stdout
    assert 'darts genotype per cell' in out and str(run / 'genotype_darts.json') in out
    assert 'Genotype(' not in out
    train = [line.strip() for line in out.splitlines() if line.strip().startswith('ddarts-zoo train')]
    assert len(train) == 1 and f'--genotype {run / "genotype.json"}' in train[0]
    args = shlex.split(train[0])[2:]
    args[args.index('--out') + 1] = str(tmp_path / 'train')
    train_cmd = [sys.executable, '-m', 'ddarts_zoo', 'train', *args, '--epochs', '1', '--max-steps', '2',
                 '--threads', '1', '--no-progress']
    proc = subprocess.run(train_cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    written = sorted(p.name for p in (tmp_path / 'train').iterdir())
    assert any(name.startswith('checkpoint') for name in written), written
