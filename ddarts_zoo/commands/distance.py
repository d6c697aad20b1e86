"""``ddarts-zoo distance``: architecture distance (paper Sec. 4.5) between genotypes, or a pairwise matrix."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from . import output_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('genotypes', nargs='*', metavar='GENOTYPE',
                        help="shipped names (e.g. resnet18, do1_resnet18) or genotype files (JSON / authors' "
                             'text); two without --matrix; with --matrix any number (default: all shipped)')
    parser.add_argument('--matrix', action='store_true', help='print the pairwise distance matrix')
    parser.add_argument('--out', metavar='FILE', help='with --matrix: write a heatmap (.png, .svg or .pdf)')
    parser.add_argument('--decimals', type=int, default=4, help='decimals printed (default: 4)')


def format_matrix(matrix, labels: Sequence[str], decimals: int = 4) -> str:
    """Plain-text matrix with row and column labels."""
    width = max(decimals + 2, *(len(s) for s in labels))
    head = ' ' * max(len(s) for s in labels)
    lines = [head + '  ' + '  '.join(f'{s:>{width}}' for s in labels)]
    for label, row in zip(labels, matrix):
        lines.append(f'{label:<{len(head)}}  ' + '  '.join(f'{v:>{width}.{decimals}f}' for v in row))
    return '\n'.join(lines)


def _label(spec: str, geno) -> str:
    return geno.name or spec


def run(args: argparse.Namespace) -> int:
    from ..errors import UserError, user_errors

    if not 0 <= args.decimals <= 12:
        raise UserError(f'--decimals must be in 0..12, got {args.decimals}')
    if args.out and not args.matrix:
        raise UserError('--out needs --matrix')
    if not args.matrix and len(args.genotypes) != 2:
        raise UserError(f'give exactly two genotypes (or use --matrix), got {len(args.genotypes)}')
    out = output_file(args.out) if args.out else None
    with user_errors(ValueError):  # a genotype or value refused while loading / computing
        if args.matrix:
            return _print_matrix(args.genotypes, args.decimals, out)
        return _print_pair(args.genotypes, args.decimals)


def _print_matrix(specs: Sequence[str], d: int, out: Optional[Path]) -> int:
    from ..distance import distance_matrix
    from ..errors import UserError
    from ..genotypes import load_genotype, names

    specs = list(specs) or names()
    if len(specs) < 2:
        raise UserError('--matrix needs at least two genotypes')
    genos = [load_genotype(s) for s in specs]
    labels = [_label(s, g) for s, g in zip(specs, genos)]
    matrix = distance_matrix(genos)
    print(format_matrix(matrix, labels, d))
    counts = {g.num_cells for g in genos}
    if len(counts) > 1:
        print(f'note: cell counts differ ({sorted(counts)}); each pair averages over its common leading cells')
    if out is not None:
        from ..plot import plot_distance_matrix
        print(f'wrote {plot_distance_matrix(matrix, labels, out)}')
    return 0


def _print_pair(specs: Sequence[str], d: int) -> int:
    from ..distance import cell_distances
    from ..genotypes import load_genotype

    a, b = (load_genotype(s) for s in specs)
    per_cell = cell_distances(a, b)
    la, lb = _label(specs[0], a), _label(specs[1], b)
    print(f'distance({la}, {lb}) = {per_cell.mean():.{d}f}')
    if a.num_cells != b.num_cells:
        print(f'note: {la} has {a.num_cells} cells and {lb} {b.num_cells}; averaged over the first '
              f'{len(per_cell)} (common leading cells)')
    for i, v in enumerate(per_cell):
        kinds = {'R' if g.is_reduction(i) else 'N' for g in (a, b)}
        kind = 'reduction' if kinds == {'R'} else 'normal' if kinds == {'N'} else 'normal/reduction'
        print(f'  cell {i:2d} ({kind}): {v:.{d}f}')
    return 0
