"""Two CPU ranks (gloo on 127.0.0.1) launched by torchrun: identical alphas after every step, one writer."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from ports import free_port

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent('''
    import torch
    from search.config import SearchConfig
    from search.presets import preset
    from search.searcher import Searcher

    records = []

    def record(searcher, epoch, step):
        records.append(torch.cat([a.detach().reshape(-1) for a in searcher.net.alphas]).clone())

    cfg = SearchConfig(**dict(preset('tiny'), out={out!r}, name='ddp', progress=False, epochs=2,
                              max_steps_per_epoch=3, preset='tiny'))
    s = Searcher(cfg, step_callback=record)
    res = s.run()
    torch.save({{'alphas': records, 'written': s.written, 'world': s.ctx.world_size, 'rank': s.ctx.rank,
                'weights': [p.detach().clone() for p in s.updates.w_params],
                'buffers': [b.clone() for b in s.net.buffers()],
                'first_batch': next(iter(s.w_loader))[1].tolist(),
                'genes': [list(map(tuple, g)) for g in res.genotypes['sparse'].genes]}},
               {out!r} + f'/rank{{s.ctx.rank}}.pt')
''')



@pytest.mark.slow
def test_two_ranks_agree_and_only_rank0_writes(tmp_path):
    script = tmp_path / 'ddp_search.py'
    script.write_text(SCRIPT.format(out=str(tmp_path)))
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nnodes', '1', '--nproc-per-node', '2',
           '--master-addr', '127.0.0.1', '--master-port', str(free_port()), str(script)]
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0 = torch.load(tmp_path / 'rank0.pt', weights_only=False)
    r1 = torch.load(tmp_path / 'rank1.pt', weights_only=False)
    assert r0['world'] == r1['world'] == 2
    assert len(r0['alphas']) == len(r1['alphas']) == 6
    for step, (a, b) in enumerate(zip(r0['alphas'], r1['alphas'])):
        assert torch.equal(a, b), f'alphas differ after step {step}'
    assert not torch.equal(r0['alphas'][0], r0['alphas'][-1])            # they moved
    for a, b in zip(r0['weights'], r1['weights']):
        assert torch.equal(a, b)
    for a, b in zip(r0['buffers'], r1['buffers']):                    # BN statistics: rank 0's everywhere
        assert torch.equal(a, b)
    assert r0['first_batch'] != r1['first_batch']                         # each rank has its own shard
    assert r0['genes'] == r1['genes']
    assert r1['written'] == [] and r0['written']                          # a single writer
    run_dir = tmp_path / 'ddp'
    assert all(str(p).startswith(str(run_dir)) for p in r0['written'])
    assert (run_dir / 'checkpoint.pt').is_file() and (run_dir / 'genotype_sparse.json').is_file()
    ckpt = torch.load(run_dir / 'checkpoint.pt', weights_only=True)
    assert len(ckpt['rng']) == 2                                          # every rank's RNG state, for resume
    assert 'world size 2' in (run_dir / 'search.log').read_text()
