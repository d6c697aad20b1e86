"""D-DARTS search (paper Sec. 4): the supernet with individual cells, its losses and the search loop.

``search/`` builds on :mod:`ddarts_zoo` (ops, genotypes, data, distance) and produces genotypes that
``ddarts_zoo`` networks consume; ``ddarts_zoo`` never imports it.

* :mod:`search.supernet` -- :class:`SuperNet`, :class:`SearchCell`, :class:`MixedOp`, alpha parsing;
* :mod:`search.losses` -- zero-one loss, marginal contributions (graph-free, cached prefixes), ablation loss;
* :mod:`search.config` -- :class:`SearchConfig`; :mod:`search.data` -- the weight / architecture splits;
* :mod:`search.step` -- cell agents, the one-backward architecture step, the weight step;
  :mod:`search.arch_optimizer` -- every cell's Adam as one multi-tensor step; :mod:`search.graphs` -- CUDA
  graphs of the steps; :mod:`search.epoch_stats` -- step statistics kept on the device;
  :mod:`search.reference` -- the authors' cost structure (bench and tests only);
* :mod:`search.searcher` -- :class:`Searcher`, the loop; :mod:`search.checkpoint`, :mod:`search.logs`,
  :mod:`search.plots` -- what a run writes;
* :mod:`search.presets` -- ``dd1`` .. ``dd7``, ``do{1,2}-{resnet18,resnet50,xception}``, ``quick``;
* ``python search/run.py`` -- the command line; ``python search/bench.py`` -- this step vs the authors' own.
"""
from .supernet import MixedOp, SearchCell, SuperNet, parse_cell, parse_genotype
from .config import SearchConfig
from .searcher import Searcher, SearchResult

__all__ = ['MixedOp', 'SearchCell', 'SuperNet', 'parse_cell', 'parse_genotype', 'SearchConfig', 'Searcher',
           'SearchResult']
