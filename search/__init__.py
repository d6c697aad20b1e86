"""D-DARTS search (paper Sec. 4): the supernet with individual cells, its losses and the search loop.

``search/`` builds on :mod:`ddarts_zoo` (ops, genotypes, data, distance) and produces genotypes that
``ddarts_zoo`` networks consume; ``ddarts_zoo`` never imports it.

* :mod:`search.supernet` -- :class:`SuperNet`, :class:`SearchCell`, :class:`MixedOp`, alpha parsing;
* :mod:`search.mixing` -- sigmoid (D-DARTS) or softmax (DARTS) mixing of the ops;
* :mod:`search.losses` -- the losses (``fair``, ``ablation``, ``ablation-grad``) as objects, from the terms of
  :mod:`search.loss_terms`, the marginal contributions of :mod:`search.marginal` (graph-free, cached prefixes)
  and the differentiated ablation term of :mod:`search.ablation_grad`;
* :mod:`search.config` -- :class:`SearchConfig`; :mod:`search.data` -- the weight / architecture splits;
* :mod:`search.step` -- cell agents, the architecture and weight updates (:class:`SearchUpdates`);
  :mod:`search.arch_optimizer` -- every cell's Adam as one multi-tensor step; :mod:`search.graphs` -- CUDA
  graphs of the steps; :mod:`search.epoch_stats` -- step statistics kept on the device;
  :mod:`search.reference` -- the authors' cost structure (bench and tests only);
* :mod:`search.searcher` -- :class:`Searcher`, the loop; :mod:`search.checkpoint`, :mod:`search.logs`,
  :mod:`search.plots` -- what a run writes;
* :mod:`search.presets` -- ``dd1`` .. ``dd7``, ``do{1,2}-{resnet18,resnet50,xception}``, ``quick``;
* ``python search/run.py`` -- the command line; ``python search/bench.py`` -- this step vs the authors' own
  (:mod:`search.authors_step` times theirs).

The package is installed with ``ddarts_zoo`` (``import search`` works from anywhere); its scripts also run
from a clone (``python search/run.py``).
"""
import os as _os
import sys as _sys

if 'torch' not in _sys.modules:  # before torch loads OpenMP: idle threads sleep instead of spinning under load
    _os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

from .supernet import MixedOp  # noqa: E402, SearchCell, SuperNet, parse_cell, parse_genotype
from .config import SearchConfig  # noqa: E402
from .searcher import Searcher, SearchResult  # noqa: E402

__all__ = ['MixedOp', 'SearchCell', 'SuperNet', 'parse_cell', 'parse_genotype', 'SearchConfig', 'Searcher',
           'SearchResult']
