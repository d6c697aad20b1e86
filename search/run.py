"""Command line of the D-DARTS search: ``python search/run.py [--preset NAME] [options]``.

Without arguments it runs the ``quick`` preset: a few-minute CPU search on the embedded digits dataset, which
needs no download.  ``--preset dd1 ... dd7 | do1-resnet18 ... do2-xception`` reproduces the paper's searches
(see :mod:`search.presets`); flags given explicitly override the preset.  Multi-GPU / multi-process::

    torchrun --nproc-per-node 4 search/run.py --preset dd4 --data /datasets/cifar100

Continue an interrupted run (bit-exactly, from the last completed epoch)::

    python search/run.py --resume runs/search/<run>

Under ``torchrun --max-restarts N``, ``--name NAME --resume auto`` lets restarted workers continue the run
from its last checkpoint by themselves (it starts the run when ``--out/NAME`` holds no checkpoint yet).

Bad input (an option, a genotype, a checkpoint) ends as one line ``error: ...`` and exit code 2; ``--debug``
shows the traceback instead.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from search.presets import PRESET_SOURCES, PRESETS, preset
from search.config import SearchConfig
from search.losses import LOSSES
from search.mixing import MIXINGS
from search.supernet import CELL_MODES
from search.searcher import Searcher
from search.step import NonFiniteLossError
from ddarts_zoo.errors import UserError, run_cli, user_errors

__all__ = ['build_parser', 'config_from_args', 'main']

DEFAULT_PRESET = 'quick'


def _bool_flag(p: argparse.ArgumentParser, name: str, help: str) -> None:
    p.add_argument(f'--{name}', action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help)


def _data_options(g: Any) -> None:
    """Options of the 'data' group."""
    g.add_argument('--dataset', help='digits (embedded), cifar10, cifar100, imagenet, or folder: your own images '
                                     'in ROOT/train/<class>/* (and ROOT/val/<class>/*)')
    g.add_argument('--data', help='dataset root for cifar10/cifar100/imagenet/folder (never downloaded)')
    g.add_argument('--subset', type=float, help='keep this fraction of the training set (e.g. ImageNet 0.1)')
    g.add_argument('--image-size', type=int, help='input resolution (default: the dataset\'s; for a folder, the '
                                                  'median shorter side of its images, at most 224)')
    g.add_argument('--workers', type=int, help='data-loader worker processes')

def _search_space_options(g: Any) -> None:
    """Options of the 'search space' group."""
    g.add_argument('--ops', help="'darts' (7 ops), 'dartopti' (12 ops) or a comma list of registered ops")
    g.add_argument('--baseline', help='DARTOpti: start from resnet18 | resnet50 | xception (or a genotype file); '
                                      'implies the baseline\'s cells and reductions')
    g.add_argument('--layers', type=int, help='number of cells (default 8)')
    g.add_argument('--channels', '--init-channels', dest='channels', type=int, help='initial width C')
    g.add_argument('--steps', type=int, help='intermediate nodes per cell (default 4)')
    g.add_argument('--multiplier', type=int,
                   help='last nodes concatenated as cell output (default: 4, or all when --steps < 4)')
    g.add_argument('--stem', choices=['cifar', 'imagenet'], help='stem (default: imagenet for imagenet)')
    g.add_argument('--cells', choices=list(CELL_MODES),
                   help='individual (default, D-DARTS): an alpha per cell; shared (DARTS, FairDARTS): one alpha '
                        'for all normal cells and one for all reduction cells')

def _schedule_options(g: Any) -> None:
    """Options of the 'schedule' group."""
    g.add_argument('--epochs', type=int, help='search epochs')
    g.add_argument('--pretrain-epochs', type=int,
                   help='weight-only epochs before the search (default: 5 with --baseline, else 0)')
    g.add_argument('--batch-size', type=int, help='batch size per process')
    g.add_argument('--max-steps-per-epoch', type=int, help='cap the steps of an epoch (smoke tests)')

def _losses_options(g: Any) -> None:
    """Options of the 'losses' group."""
    g.add_argument('--loss', choices=list(LOSSES),
                   help="fair: L_CE + w01 L01.  ablation (the authors' semantics, kept for reproduction): + w_abl "
                        "L_abl with the marginal contributions as plain numbers, so it adds NO gradient (seeded, "
                        "the same alphas as fair; it only logs them).  ablation-grad: the marginal contributions "
                        "keep their graphs and each cell also receives w_abl dL_abl_i/d alpha_i (slower)")
    g.add_argument('--mixing', choices=list(MIXINGS),
                   help='sigmoid (default, D-DARTS / FairDARTS): each op weighs sigmoid(alpha); softmax (DARTS): '
                        'softmax over the ops of an edge, no zero-one loss, darts parsing')
    g.add_argument('--w01', type=float, help='zero-one loss weight (paper: 7)')
    g.add_argument('--w-abl', type=float, help='ablation loss weight (paper: 0.5)')
    _bool_flag(g, 'mc-batched', 'stack the marginal-contribution reruns into one batched pass '
                                '(default: only for small activations, where it is faster)')

def _optimizers_options(g: Any) -> None:
    """Options of the 'optimizers' group."""
    g.add_argument('--arch-lr', type=float, help='per-cell Adam learning rate (paper: 3e-3)')
    g.add_argument('--arch-lr-min', type=float, help='its cosine floor (paper: 1e-3)')
    g.add_argument('--arch-weight-decay', type=float, help='per-cell Adam weight decay (paper: 1e-3)')
    g.add_argument('--lr', type=float, help='weight SGD learning rate (paper: 0.005)')
    g.add_argument('--lr-min', type=float, help='its cosine floor (paper: 0.001)')
    g.add_argument('--momentum', type=float)
    g.add_argument('--weight-decay', type=float)
    g.add_argument('--grad-clip', type=float)

def _genotypes_options(g: Any) -> None:
    """Options of the 'genotypes' group."""
    g.add_argument('--parse', choices=['sparse', 'edge', 'darts'],
                   help='primary parsing (sparse and edge genotypes are always written; darts alone with '
                        '--mixing softmax, its default there)')
    g.add_argument('--threshold', type=float, help='sigmoid threshold of sparse/edge parsing (paper: 0.85)')
    g.add_argument('--derive-layers', type=int, help='also write the Algorithm 1 expansion to this many cells')

def _early_stopping_dartopti_options(g: Any) -> None:
    """Options of the 'early stopping (DARTOpti)' group."""
    _bool_flag(g, 'early-stop', 'stop when the distance to the baseline is stable (default: on with --baseline)')
    g.add_argument('--early-stop-patience', type=int)
    g.add_argument('--early-stop-tol', type=float)
    g.add_argument('--early-stop-from', type=int)

def _run_options(g: Any) -> None:
    """Options of the 'run' group."""
    g.add_argument('--seed', type=int)
    _bool_flag(g, 'amp', 'mixed precision (default dtype: float16 + GradScaler on CUDA, bfloat16 on CPU)')
    g.add_argument('--amp-dtype', choices=['float16', 'bfloat16'],
                   help='AMP dtype; float16 always uses a GradScaler (on a CPU too: the CUDA precision path)')
    _bool_flag(g, 'cuda-graphs', 'replay each update as a CUDA graph (CUDA, --loss fair / ablation; default off)')
    g.add_argument('--device', help="'auto' (default), 'cpu', 'cuda', 'cuda:1'")
    g.add_argument('--nonfinite', choices=['skip', 'error'], help='on a NaN/inf loss: skip the step (default) or stop')
    g.add_argument('--max-nonfinite', type=int, help='consecutive skipped steps tolerated (default 10)')
    _bool_flag(g, 'eval', 'evaluate the supernet on the architecture split after each epoch (default on)')
    g.add_argument('--out', help='parent directory of run directories (default runs/search)')
    g.add_argument('--name', help='run directory name (default: timestamp-preset-dataset-loss-seed)')
    _bool_flag(g, 'progress', 'tqdm progress bars (default on)')
    _bool_flag(g, 'tensorboard', 'TensorBoard event files (default on)')
    _bool_flag(g, 'plots', 'end-of-run plots (default on)')
    _bool_flag(g, 'deterministic', 'torch.use_deterministic_algorithms(True)')
    g.add_argument('--threads', type=int, help='intra-op CPU threads per process (default 1 on CPU)')
    g.add_argument('--dist-timeout', type=float, metavar='SECONDS',
                   help='torchrun: how long a collective waits for the other ranks before failing (default 600)')

_OPTION_GROUPS = {
    'data': _data_options,
    'search space': _search_space_options,
    'schedule': _schedule_options,
    'losses': _losses_options,
    'optimizers': _optimizers_options,
    'genotypes': _genotypes_options,
    'early stopping (DARTOpti)': _early_stopping_dartopti_options,
    'run': _run_options,
}
"""The option groups of the command line, in the order ``--help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='python search/run.py', description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=argparse.SUPPRESS,
        epilog='presets:\n' + '\n'.join(f'  {k:14s} {v}' for k, v in PRESET_SOURCES.items()))
    p.add_argument('--preset', choices=list(PRESETS), help=f'named configuration (default: {DEFAULT_PRESET})')
    p.add_argument('--resume', metavar='RUN_DIR',
                   help="continue the run in RUN_DIR (its saved options are used); 'auto': continue --out/--name "
                        "when it holds a checkpoint written with the same options, else start it (torchrun "
                        "--max-restarts: restarted workers resume by themselves)")
    p.add_argument('--debug', action='store_true', help='on an error, show the traceback instead of one line')
    for title, add_options in _OPTION_GROUPS.items():
        add_options(p.add_argument_group(title))
    return p


def config_from_args(args: argparse.Namespace) -> SearchConfig:
    """Preset values, then the flags given explicitly."""
    given: Dict[str, Any] = {k: v for k, v in vars(args).items() if k not in ('preset', 'resume', 'debug')}
    name = getattr(args, 'preset', None) or DEFAULT_PRESET
    values = preset(name)
    if given.get('dataset', values.get('dataset')) != values.get('dataset') and 'image_size' not in given:
        values['image_size'] = None   # a preset's resolution belongs to its dataset, not to the one given
    values.update(given)
    if values.get('mixing') == 'softmax' and 'parse' not in given:
        values['parse'] = 'darts'   # the one parsing of softmax weights
    if values.get('baseline') is not None:
        clash = [f'--{k}' for k in ('layers', 'steps') if k in given]
        if clash:
            raise UserError(f'{" and ".join(clash)} cannot be combined with --baseline: the baseline fixes the '
                            f'cells, their reductions and their nodes')
    values['preset'] = name
    return SearchConfig(**values)


def _searcher_from_args(args: argparse.Namespace) -> Searcher:
    """A new search from the options, or the run named by ``--resume`` (bad input: :class:`UserError`)."""
    resume = getattr(args, 'resume', None)
    if resume is None or resume == 'auto':
        with user_errors(TypeError, ValueError):  # unknown option names, values refused by a library
            cfg = config_from_args(args)
        cfg.check()
        with user_errors(ValueError):  # missing dataset, existing run directory, bad genotype ...
            return Searcher(cfg, resume=resume)
    extra = sorted(k for k in vars(args) if k not in ('resume', 'progress', 'debug', 'dist_timeout'))
    if extra:
        ignored = ', '.join('--' + k.replace('_', '-') for k in extra)
        print(f'--resume uses the run\'s saved options; ignoring {ignored}', file=sys.stderr)
    try:
        kept = {k: getattr(args, k) for k in ('progress', 'dist_timeout') if hasattr(args, k)}
        return Searcher(SearchConfig(**kept), resume=resume)
    except (OSError, ValueError) as err:
        raise UserError(f'cannot resume {resume}: {err}') from err


def _main(argv: Optional[Sequence[str]] = None) -> int:
    searcher = _searcher_from_args(build_parser().parse_args(argv))
    try:
        searcher.run()
    except NonFiniteLossError as err:
        print(f'error: {err}', file=sys.stderr)
        return 3
    # the searcher has printed (and logged) the genotype files, the plots, a per-cell summary and the
    # command that trains the result
    import torch.distributed as dist
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the search; returns the exit code (2: bad input, one ``error:`` line; 3: a non-finite loss)."""
    return run_cli(_main, sys.argv[1:] if argv is None else argv)


if __name__ == '__main__':
    sys.exit(main())
