"""Train (and validate) an MMDetection 3 config with mmengine's ``Runner``; CPU or GPU, single or distributed.

Usage::

    python -m ddarts_zoo.mmdet.train CONFIG [--work-dir DIR] [--cfg-options KEY=VALUE ...] [--resume [CKPT]]
    torchrun --nproc_per_node=8 -m ddarts_zoo.mmdet.train CONFIG --launcher pytorch

It does what mmdet's ``tools/train.py`` does, plus: a config with a top-level
``digits_det = dict(root=..., **params)`` gets the digits-det data set generated there first when it is
missing (:func:`ddarts_zoo.mmdet.digits_det.ensure_digits_det`); under ``torchrun`` on a machine without CUDA
it trains with gloo (:mod:`ddarts_zoo.mmdet.cpu_dist`), which mmengine's launcher cannot. After training, the
final validation metrics are printed and written to ``WORK_DIR/final_metrics.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..errors import run_cli
from ..utils.io import atomic_write

__all__ = ['main', 'build_config', 'train']


def _parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(prog='python -m ddarts_zoo.mmdet.train',
                                     description=__doc__.split('\n')[0])
    parser.add_argument('config', help='mmdet config file')
    parser.add_argument('--work-dir', help='logs and checkpoints (default: ./work_dirs/<config name>)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default=None,
                        help='override config entries, e.g. train_cfg.max_iters=100 '
                             'model.backbone.with_cp=True')
    parser.add_argument('--resume', nargs='?', const='auto', default=None,
                        help='resume from CKPT, or from the latest checkpoint of the work dir if no CKPT '
                             'is given')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision (GPU)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='distributed launcher (use "pytorch" under torchrun)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def build_config(config: str, work_dir: Optional[str] = None, cfg_options: Optional[Dict[str, Any]] = None,
                 launcher: str = 'none', resume: Optional[str] = None, amp: bool = False):
    """Load ``config`` (registering ``DDartsBackbone`` first) and apply the command-line settings."""
    from mmengine.config import Config

    from . import DDartsBackbone  # noqa: F401  (registers the backbone before the config is parsed)
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.launcher = launcher
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = str(Path('work_dirs') / Path(config).stem)
    if amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif resume is not None:
        cfg.resume, cfg.load_from = True, resume
    return cfg


def train(cfg) -> Dict[str, Any]:
    """Generate digits-det if the config asks for it, train with the ``Runner``, return the last metrics.

    The result (config name, work dir, wall seconds, last ``coco/*`` validation metrics) is also written
    atomically to ``WORK_DIR/final_metrics.json`` by rank 0.
    """
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    from .cpu_dist import prepare_cpu_distributed
    from .digits_det import ensure_digits_det
    if cfg.get('digits_det'):
        ensure_digits_det(**cfg.digits_det)
    prepare_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    start = time.time()
    runner.train()
    hub = runner.message_hub
    metrics = {key[len('val/'):]: hub.get_scalar(key).current()
               for key in hub.log_scalars if key.startswith('val/coco/')}
    result = {'config': cfg.filename, 'work_dir': cfg.work_dir,
              'train_seconds': round(time.time() - start, 1), 'iterations': runner.iter, 'metrics': metrics}
    if runner.rank == 0:
        atomic_write(Path(cfg.work_dir) / 'final_metrics.json',
                     json.dumps(result, indent=1, sort_keys=True, default=float))
    return result


def _run(argv: Optional[List[str]]) -> int:
    args = _parse_args(argv)
    cfg = build_config(args.config, args.work_dir, args.cfg_options, args.launcher, args.resume, args.amp)
    result = train(cfg)
    if int(os.environ.get('RANK', '0')) == 0:
        print(json.dumps(result, indent=1, sort_keys=True, default=float))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line; bad input (missing data set, wrong config field) is one ``error:`` line, exit code 2."""
    return run_cli(_run, sys.argv[1:] if argv is None else argv)


if __name__ == '__main__':
    sys.exit(main())
