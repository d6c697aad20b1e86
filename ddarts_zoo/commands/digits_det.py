"""``ddarts-zoo digits-det``: prepare the generated digits-det detection set where the configs expect it.

The digits-det configs in ``detection_configs/`` read ``data/digits-det/`` relative to the current directory,
as mmdet's own configs read ``data/coco/``. Run this once from the directory you train in; a second run with
the same parameters does nothing. Needs the ``det`` extra (pycocotools, mmdet).
"""
from __future__ import annotations

import argparse
import time

DEFAULT_OUT = 'data/digits-det'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--out', metavar='DIR', default=DEFAULT_OUT,
                        help=f'folder to write (default: {DEFAULT_OUT}, where the digits-det configs look)')
    parser.add_argument('--seed', type=int, default=0, help='generator seed (default: 0, as in the configs)')
    parser.add_argument('--train-repeats', type=int, default=2, metavar='N',
                        help='placements of each training digit (default: 2)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace a folder generated with other parameters')


def run(args: argparse.Namespace) -> int:
    from ..mmdet.digits_det import ensure_digits_det, generate_digits_det, read_digits_det_meta

    start = time.time()
    params = dict(seed=args.seed, train_repeats=args.train_repeats)
    before = read_digits_det_meta(args.out)
    if args.overwrite and before is not None:
        root = generate_digits_det(args.out, overwrite=True, **params)
    else:
        root = ensure_digits_det(args.out, **params)
    meta = read_digits_det_meta(root)
    counts = ', '.join(f'{split} {c["images"]} images / {c["instances"]} instances'
                       for split, c in meta['splits'].items())
    if before == meta:
        print(f'{args.out} is complete already ({counts}); nothing to do')
    else:
        print(f'wrote {args.out}: {counts} in {time.time() - start:.1f} s')
    return 0
