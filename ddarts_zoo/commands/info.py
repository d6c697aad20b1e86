"""``ddarts-zoo info``: the model table (genotype, cells, trained / paper params, MACs, published weights)."""
from __future__ import annotations

import argparse
from typing import Dict, List


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('models', nargs='*', help='model names (default: every registered ddarts_* model)')
    parser.add_argument('--markdown', action='store_true', help='print a Markdown table (as in README)')
    parser.add_argument('--no-macs', action='store_true', help='skip the MAC count (faster)')


def model_rows(names: List[str], with_macs: bool = True) -> List[Dict[str, object]]:
    """One row per model: name, genotype, cells, reductions, width, input, params (no aux) as created and in
    the paper configuration (``prune_unused_inputs=False``), MACs, published weights."""
    import warnings

    import timm

    from ..complexity import count_macs, count_params
    from ..genotype import DeadNodeWarning
    from ..weights import published_tags

    rows = []
    for name in names:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', DeadNodeWarning)
            model = timm.create_model(name)
            paper = timm.create_model(name, prune_unused_inputs=False)
        cfg = model.pretrained_cfg
        geno = model.genotype
        tags = [t.split('.', 1)[1] for t in published_tags(name)]
        rows.append({
            'model': name,
            'genotype': geno.name or '-',
            'paper': geno.meta.get('paper_name', '-'),
            'cells': geno.num_cells,
            'reductions': ','.join(map(str, geno.reductions)),
            'C': model.init_channels,
            'input': 'x'.join(map(str, cfg['input_size'])),
            'classes': model.num_classes,
            'params_m': count_params(model, include_aux=False) / 1e6,
            'paper_params_m': count_params(paper, include_aux=False) / 1e6,
            'macs_m': count_macs(model, cfg['input_size']) / 1e6 if with_macs else float('nan'),
            'weights': ', '.join(tags) if tags else 'none published',
        })
    return rows


def format_rows(rows: List[Dict[str, object]], markdown: bool = False) -> str:
    headers = ['model', 'paper', 'genotype', 'cells', 'reductions', 'C', 'input', 'classes', 'params (M)',
               'paper params (M)', 'MACs (M)', 'weights']
    table = [[str(r['model']), str(r['paper']), str(r['genotype']), str(r['cells']), str(r['reductions']),
              str(r['C']), str(r['input']), str(r['classes']), f"{r['params_m']:.2f}",
              f"{r['paper_params_m']:.2f}",
              '-' if r['macs_m'] != r['macs_m'] else f"{r['macs_m']:.0f}", str(r['weights'])] for r in rows]
    if markdown:
        lines = ['| ' + ' | '.join(headers) + ' |', '|' + '---|' * len(headers)]
        lines += ['| ' + ' | '.join(row) + ' |' for row in table]
        return '\n'.join(lines)
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
    fmt = '  '.join(f'{{:<{w}}}' for w in widths)
    lines = [fmt.format(*headers), fmt.format(*('-' * w for w in widths))] + [fmt.format(*r) for r in table]
    return '\n'.join(lines)


def run(args: argparse.Namespace) -> int:
    import timm

    import ddarts_zoo  # noqa: F401  (registers the models)

    names = args.models or [n for n in timm.list_models('ddarts_*') if not n.startswith('ddarts_genotype')]
    unknown = [n for n in names if n not in timm.list_models('ddarts_*')]
    if unknown:
        print(f'error: unknown model(s): {", ".join(unknown)}; see `ddarts-zoo info` for the list')
        return 2
    print(format_rows(model_rows(names, with_macs=not args.no_macs), markdown=args.markdown))
    print("params: as created (every parameter trains); paper params: prune_unused_inputs=False, the paper's "
          'networks, whose counts include modules no output reads. Both leave out the training-only '
          'auxiliary head; MACs at the default input size.')
    return 0
