"""ddarts-zoo: D-DARTS / DARTOpti architectures for timm and MMDetection.

Importing this package registers the ``ddarts_*`` models with timm (it does not import mmdet).
"""
from .genotype import Edge, Genotype, GenotypeError, DeadNodeWarning, parse_official
from .genotypes import load_genotype
from .ops import OPS, DARTS_SPACE, DARTOPTI_SPACE, register_op
from . import genotypes

__version__ = '0.1.0'
from . import zoo  # noqa: E402  (registers the timm models)
