"""Named search configurations: the paper's models and the quick default.

Every preset starts from :class:`search.config.SearchConfig`'s defaults, which are the paper's search
hyperparameters (Sec. 5.1: SGD 0.005 -> 0.001, momentum 0.9, wd 3e-4, clip 5; per-cell Adam 3e-3, betas
(0.9, 0.999), wd 1e-3, cosine to 1e-3; threshold 0.85; 8 cells, 4 steps, 50 epochs; Sec. 5.2.1: ``w01 = 7``,
``w_abl = 0.5``).  Command-line flags given explicitly override preset values.

The provenance of every preset is :data:`PRESET_SOURCES`; :func:`preset_table` renders the presets as the
Markdown table in README (a test keeps the two equal) and ``python search/run.py --help`` lists them.
All CIFAR / ImageNet presets use AMP and batch 128 (CIFAR) / 96 (ImageNet), Sec. 5.1.
"""
from __future__ import annotations

from typing import Any, Dict

__all__ = ['PRESETS', 'preset', 'PRESET_SOURCES', 'preset_table']

_CIFAR = dict(layers=8, channels=16, epochs=50, batch_size=128, amp=True, threshold=0.85, w01=7.0, w_abl=0.5)
_DARTOPTI = dict(ops='dartopti', channels=32, pretrain_epochs=5, epochs=50, batch_size=128, amp=True,
                 parse='sparse', loss='ablation', early_stop=True)

PRESETS: Dict[str, Dict[str, Any]] = {
    'dd1': dict(_CIFAR, dataset='cifar10', loss='ablation', parse='sparse'),
    'dd2': dict(_CIFAR, dataset='cifar10', loss='fair', parse='edge'),
    'dd3': dict(_CIFAR, dataset='cifar10', loss='ablation', parse='edge', derive_layers=14),
    'dd4': dict(_CIFAR, dataset='cifar100', loss='ablation', parse='edge', derive_layers=14),
    'dd5': dict(_CIFAR, dataset='cifar100', loss='ablation', parse='sparse'),
    'dd6': dict(_CIFAR, dataset='cifar100', loss='fair', parse='edge', derive_layers=14),
    'dd7': dict(_CIFAR, dataset='imagenet', loss='ablation', parse='edge', batch_size=96, subset=0.1,
                derive_layers=14, workers=8),
    # the default of `python search/run.py`: digits at their native 8 x 8 px, 8 cells of width 4, 66 steps,
    # and a 50x larger alpha learning rate than the paper's so that weights cross the 0.85 threshold
    # (with 0.06 instead of 0.15, half of the cells kept no op after 3 epochs)
    'quick': dict(dataset='digits', layers=8, channels=4, image_size=8, epochs=3, batch_size=32,
                  loss='ablation', parse='sparse', arch_lr=0.15, arch_lr_min=0.05, lr=0.05, lr_min=0.01,
                  amp=False),
    # seconds-long smoke configuration (the tests use it): 3 cells with 2 nodes, 10 % of digits at 8 px
    'tiny': dict(dataset='digits', subset=0.1, layers=3, channels=4, steps=2, image_size=8, epochs=2,
                 batch_size=8, loss='ablation', parse='sparse', arch_lr=0.2, arch_lr_min=0.05, lr=0.05,
                 lr_min=0.01, amp=False),
}
for _tag, _dataset in (('do1', 'cifar10'), ('do2', 'cifar100')):
    for _base in ('resnet18', 'resnet50', 'xception'):
        PRESETS[f'{_tag}-{_base}'] = dict(_DARTOPTI, dataset=_dataset, baseline=_base)

PRESET_SOURCES: Dict[str, str] = {
    'dd1': 'paper Table 3, Sec. 5.2.2 (DD-1; published as D-DARTS_threshold_sparse_cifar10_0.85_50)',
    'dd2': 'paper Table 3, Sec. 5.2.2 (DD-2, searched with L_fair)',
    'dd3': 'paper Table 3, Sec. 5.2.2 (DD-3: the L_abl counterpart of DD-2, 14 layers by Algorithm 1); unpublished',
    'dd4': 'paper Tables 3-4 (DD-4, 8 / 14 layers)',
    'dd5': 'paper Table 4 (DD-5)',
    'dd6': 'paper Table 4, Sec. 5.2.2 (DD-6: the L_fair counterpart of DD-4); unpublished',
    'dd7': 'paper Table 5, Sec. 5.1 (DD-7, batch 96; loss column lost: L_abl assumed; the 10 % ImageNet '
           'sample is our choice); unpublished',
    'quick': 'not from the paper: the default, a few-minute CPU search on the embedded digits at 8 px',
    'tiny': 'not from the paper: a seconds-long smoke test (3 cells, 2 nodes, 10 % of digits)',
}
for _k in PRESETS:
    if _k.startswith('do'):
        PRESET_SOURCES[_k] = (f'paper Table {3 if _k.startswith("do1") else 4}, Sec. 4.4, 5.1, 5.4 (DARTOpti from '
                              f'{_k.split("-")[1]}: C = 32, 5 pre-training epochs, early stopping; loss column '
                              'lost: L_abl assumed)')


def preset_table() -> str:
    """The presets as a Markdown table: dataset, loss, parsing and source of each."""
    rows = ['| preset | dataset | loss | parsing | source |', '|---|---|---|---|---|']
    for name, values in PRESETS.items():
        dataset = values['dataset'] + (f' ({values["subset"]:.0%})' if values.get('subset') else '')
        rows.append(f'| {name} | {dataset} | {values["loss"]} | {values["parse"]} | {PRESET_SOURCES[name]} |')
    return '\n'.join(rows)


def preset(name: str) -> Dict[str, Any]:
    """A copy of preset ``name``'s option values."""
    try:
        return dict(PRESETS[name])
    except KeyError:
        raise ValueError(f'unknown preset {name!r}; choose one of {", ".join(PRESETS)}') from None
