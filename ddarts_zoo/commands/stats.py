"""``ddarts-zoo stats``: op counts per cell and overall, and the parameter share of each op type."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..stats import DEFAULT_WIDTH

    parser.add_argument('genotype', metavar='GENOTYPE',
                        help='shipped name (e.g. do1_resnet18) or genotype file')
    parser.add_argument('--width', '-C', type=int, default=DEFAULT_WIDTH,
                        help=f'initial width C of the CIFAR network (default: {DEFAULT_WIDTH}; the paper '
                             f'trains DARTOpti results at 64)')
    parser.add_argument('--compare', metavar='BASELINE', default=None,
                        help='also compare with BASELINE (e.g. resnet18): op counts, parameter shares, '
                             'distance')


def run(args: argparse.Namespace) -> int:
    from ..errors import user_errors
    from ..stats import format_comparison, format_stats, genotype_stats

    with user_errors(ValueError):  # a genotype or value refused
        stats = genotype_stats(args.genotype, args.width)
        print(format_stats(stats))
        if args.compare:
            from ..distance import architecture_distance

            base = genotype_stats(args.compare, args.width)
            print()
            print(format_comparison(stats, base, architecture_distance(args.genotype, args.compare)))
    return 0
