"""Regenerate the shipped JSON genotypes from the authors' text files in ``official/``.

Run ``python -m ddarts_zoo.genotypes.build`` after changing ``SOURCES``/``BASELINES``; the tests check
that the committed JSON equals what this produces.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

from ..genotype import Genotype, parse_official

OFFICIAL_DIR = Path(__file__).resolve().parent / 'official'
CREDIT = "Heuillet et al., D-DARTS (authors' release, Apache-2.0)"

# name -> (authors' file stem, paper name, search dataset, parsing)
SOURCES: Dict[str, tuple] = {
    'dd1': ('D-DARTS_threshold_sparse_cifar10_0.85_50', 'DD-1', 'cifar10', 'sparse'),
    'dd2': ('D-DARTS_threshold_edge_cifar10_0.85_50', 'DD-2', 'cifar10', 'edge'),
    'dd4': ('D-DARTS_threshold_edge_abl0.5_fair7_cifar100_0.85_50', 'DD-4', 'cifar100', 'edge'),
    'dd5': ('D-DARTS_threshold_sparse_abl0.5_fair7_cifar100_0.85_50', 'DD-5', 'cifar100', 'sparse'),
}
for _base, _file_base in (('resnet18', 'ResNet18'), ('resnet50', 'ResNet50'), ('xception', 'Xception')):
    for _tag, _dataset in (('do1', 'cifar10'), ('do2', 'cifar100')):
        for _parsing in ('sparse', 'edge'):
            _name = f'{_tag}_{_base}' + ('_edge' if _parsing == 'edge' else '')
            _paper = f'{_tag.upper().replace("DO", "DO-")}-{_file_base}' + (' (edge)' if _parsing == 'edge' else '')
            SOURCES[_name] = (f'{_file_base}_{_dataset}_threshold_{_parsing}_0.85', _paper, _dataset, _parsing)

# The handcrafted DARTOpti starting points (paper Sec. 4.4), in the authors' Genotype_opt form.
_R = ("('bottleneck_1x3x1', 2, 0), ('skip_connect', 2, 0), ('bottleneck_1x3x1', 3, 2), ('skip_connect', 3, 2), "
      "('bottleneck_1x3x1', 4, 3), ('skip_connect', 4, 3)")
_R5 = "('bottleneck_1x3x1', 5, 4), ('skip_connect', 5, 4)"
_R67 = ("('bottleneck_1x3x1', 6, 5), ('skip_connect', 6, 5), ('bottleneck_1x3x1', 7, 6), "
        "('skip_connect', 7, 6)")
BASELINES: Dict[str, str] = {
    'resnet18': "Genotype_opt(genes=[[('simple_conv_3x3', 2, 0), ('simple_conv_3x3', 3, 2), ('skip_connect', 3, 0), "
                "('simple_conv_3x3', 4, 3), ('simple_conv_3x3', 5, 4), ('skip_connect', 5, 3)]], seq=[0, 0, 0, 0], "
                "concat=range(2, 6), reductions=[1, 2, 3])",
    'resnet50': f"Genotype_opt(genes=[[{_R}], [{_R}, {_R5}], [{_R}, {_R5}, {_R67}]], seq=[0, 1, 2, 0], "
                "concat=range(2, 8), reductions=[1, 2, 3])",
    'xception': "Genotype_opt(genes=[[('simple_conv_1x1', 4, 0), ('sep_conv_3x3', 2, 0), ('sep_conv_3x3', 3, 2), "
                "('max_pool_3x3', 4, 3)], [('skip_connect', 4, 0), ('sep_conv_3x3', 2, 0), ('sep_conv_3x3', 3, 2), "
                "('sep_conv_3x3', 4, 3)], [('sep_conv_3x3', 2, 0), ('sep_conv_3x3', 3, 2)]], "
                "seq=[0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 2], concat=range(2, 6), reductions=[1, 2, 11, 12])",
}
# Cell 12 of the authors' Xception CIFAR-100 edge genotype has no live node (their code crashes on it);
# it ships with an explicit, recorded skip_connect repair.
EMPTY_CELL_REPAIRS = {'do2_xception_edge'}
BASELINE_PAPER_NAMES = {'resnet18': 'ResNet18', 'resnet50': 'ResNet50', 'xception': 'Xception'}


def build_all() -> Dict[str, Genotype]:
    """Every shipped genotype, parsed from its source text."""
    out: Dict[str, Genotype] = {}
    for name, (stem, paper, dataset, parsing) in SOURCES.items():
        text = (OFFICIAL_DIR / f'{stem}.txt').read_text(encoding='utf-8')
        policy = 'skip_connect' if name in EMPTY_CELL_REPAIRS else 'error'
        out[name] = parse_official(text, name, empty_cell=policy).renamed(
            name, paper_name=paper, source=f'official/{stem}.txt', search_dataset=dataset, parsing=parsing,
            threshold=0.85, credit=CREDIT)
    for name, text in BASELINES.items():
        out[name] = parse_official(text, name).renamed(
            name, paper_name=BASELINE_PAPER_NAMES[name], source='handcrafted baseline (paper Sec. 4.4)',
            credit=CREDIT)
    return out


def main() -> None:
    target = Path(__file__).resolve().parent
    for name, geno in build_all().items():
        geno.save(target / f'{name}.json')
        print(f'{name:22s} {geno.num_cells:3d} cells  reductions={list(geno.reductions)}  {geno.op_space}')


if __name__ == '__main__':
    main()
