"""The published D-DARTS / DARTOpti genotypes and the handcrafted DARTOpti baselines, as package data.

``get(name)`` returns a :class:`~ddarts_zoo.genotype.Genotype`; ``names()`` lists what is shipped;
``load_genotype`` accepts a genotype, a JSON dict, a shipped name or a file path.
The searched genotypes come from the authors' release (Apache-2.0, see ``official/LICENSE``); the JSON
files beside this module are generated from them by ``python -m ddarts_zoo.genotypes.build``.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Mapping, Union

from ..genotype import Genotype, GenotypeError

__all__ = ['get', 'names', 'info', 'load_genotype', 'GENOTYPE_DIR']

GENOTYPE_DIR = Path(__file__).resolve().parent
GENOTYPE_SUFFIXES = ('.json', '.txt')
"""Suffixes of genotype files (JSON, the authors' text form): a missing ``x.json`` is a missing file."""


@lru_cache(maxsize=None)
def _index() -> Dict[str, Path]:
    return {p.stem: p for p in sorted(GENOTYPE_DIR.glob('*.json'))}


def names() -> List[str]:
    """Names of the shipped genotypes, sorted."""
    return sorted(_index())


@lru_cache(maxsize=None)
def get(name: str) -> Genotype:
    """The shipped genotype ``name`` (e.g. ``'dd1'``, ``'do2_resnet18'``, ``'resnet50'``)."""
    path = _index().get(name)
    if path is None:
        raise GenotypeError(f'no shipped genotype named {name!r}; shipped: {", ".join(names())}')
    return Genotype.from_dict(json.loads(path.read_text(encoding='utf-8')))


def info(name: str) -> Dict[str, object]:
    """Provenance of a shipped genotype (source file, search dataset, parsing, paper name)."""
    return dict(get(name).meta)


def load_genotype(source: Union[str, 'os.PathLike[str]', Genotype, Mapping[str, Any]]) -> Genotype:
    """Resolve a genotype given as a ``Genotype``, a JSON dict, a shipped name or a file path."""
    if isinstance(source, Genotype):
        return source
    if isinstance(source, Mapping):
        return Genotype.from_dict(source)
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if text in _index():
            return get(text)
        if os.path.exists(text):
            return Genotype.load(text)
        if os.sep in text or Path(text).suffix in GENOTYPE_SUFFIXES:
            raise GenotypeError(f'genotype file {text!r} does not exist (shipped genotypes are named: '
                                f'{", ".join(names())})')
        raise GenotypeError(f'genotype {text!r} is neither a shipped name ({", ".join(names())}) '
                            f'nor an existing file')
    raise GenotypeError(f'cannot make a genotype from {type(source).__name__}')
