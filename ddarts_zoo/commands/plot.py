"""``ddarts-zoo plot``: draw every cell of a genotype as a DAG (PNG, SVG or PDF by extension)."""
from __future__ import annotations

import argparse

from . import output_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('genotype', metavar='GENOTYPE', help='shipped name (e.g. dd1) or genotype file')
    parser.add_argument('--out', metavar='FILE', default=None,
                        help='image to write: .png, .svg or .pdf (default: GENOTYPE-NAME.png)')
    parser.add_argument('--dpi', type=int, default=150, help='resolution of PNG output (default: 150)')
    parser.add_argument('--title', default=None,
                        help='figure title (default: name, cells, op space, reductions)')


def run(args: argparse.Namespace) -> int:
    from ..errors import user_errors
    from ..genotypes import load_genotype
    from ..plot import plot_genotype

    with user_errors(ValueError):  # a genotype, image type or value refused
        geno = load_genotype(args.genotype)
        out = output_file(args.out or f'{geno.name or "genotype"}.png')
        path = plot_genotype(geno, out, dpi=args.dpi, title=args.title)
    print(f'wrote {path} ({geno.num_cells} cells, reductions {list(geno.reductions)})')
    return 0
