"""Seeded reference runs whose results must not change when the code is restructured.

Each run is a command of the project (``search/run.py`` or ``ddarts-zoo train``) at a tiny, seeded setting;
its result is the state dict of its last checkpoint (supernet with alphas, or the trained network). A
fingerprint records every tensor's dtype, shape and SHA-256 of its bytes, so a comparison names the tensors
that differ. ``python tests/seeded_runs.py OUT.json`` records the fingerprints of the code it is run with;
``tests/search/test_seeded_regression.py`` reruns the commands and compares against the recorded file.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import torch

REPO = Path(__file__).resolve().parent.parent

SEARCH = [sys.executable, 'search/run.py', '--preset', 'tiny', '--seed', '3', '--threads', '1']
TRAIN = [sys.executable, '-m', 'ddarts_zoo', 'train', '--model', 'ddarts_dd1_cifar', '--model-args',
         '{"init_channels": 4}', '--dataset', 'digits', '--epochs', '2', '--max-steps', '3', '--seed', '0',
         '--threads', '1', '--no-progress']

# name -> (command without output arguments, kind)
RUNS: Dict[str, List[str]] = {
    'search-fair': SEARCH + ['--loss', 'fair'],
    'search-ablation': SEARCH + ['--loss', 'ablation'],
    'search-ablation-grad': SEARCH + ['--loss', 'ablation-grad'],
    'search-dartopti': SEARCH + ['--baseline', 'resnet18', '--epochs', '2', '--pretrain-epochs', '1'],
    # bfloat16 needs no loss scaling: no step of this run is skipped as non-finite
    'search-ablation-grad-bf16': SEARCH + ['--loss', 'ablation-grad', '--amp', '--amp-dtype', 'bfloat16'],
    'train': TRAIN,
}


def _output_args(name: str, out: Path) -> List[str]:
    if name.startswith('search'):
        return ['--out', str(out), '--name', name]
    return ['--out', str(out / name)]


def _checkpoint(name: str, out: Path) -> Path:
    run_dir = out / name
    found = sorted(p for p in run_dir.iterdir() if p.suffix in ('.pt', '.pth') and p.name.startswith('checkpoint'))
    if not found:
        raise FileNotFoundError(f'{name}: no checkpoint in {run_dir}')
    return found[0]


def tensor_fingerprint(t: torch.Tensor) -> str:
    """``dtype/shape/sha256`` of a tensor's contents."""
    t = t.detach().cpu().contiguous()
    digest = hashlib.sha256(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b'').hexdigest()
    return f'{str(t.dtype).replace("torch.", "")}/{list(t.shape)}/{digest}'


def state_fingerprint(path: Path) -> Dict[str, str]:
    """Fingerprints of every tensor of the model in a checkpoint (search or final training)."""
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
    state = ckpt['model'] if 'model' in ckpt else ckpt['state_dict']
    return {k: tensor_fingerprint(v) for k, v in sorted(state.items())}


def run_one(name: str, out: Path) -> Dict[str, str]:
    """Run ``RUNS[name]`` from the repository root with outputs under ``out``; fingerprint its checkpoint."""
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(REPO))
    cmd = RUNS[name] + _output_args(name, out)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f'{name} failed ({proc.returncode}): {" ".join(cmd)}\n{proc.stderr[-3000:]}')
    return state_fingerprint(_checkpoint(name, out))


def main(argv: List[str]) -> int:
    target = Path(argv[0])
    out = Path(argv[1]) if len(argv) > 1 else target.parent / 'seeded_runs_out'
    result = {name: run_one(name, out) for name in RUNS}
    target.write_text(json.dumps(result, indent=1, sort_keys=True) + '\n')
    print(f'wrote {target}: {len(result)} runs')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
