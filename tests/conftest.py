"""Suite-wide settings.

Tests run small tensors, where OpenMP threads cost more than they give, and a loaded 2-core machine makes
busy-waiting threads catastrophically slow (measured: one forward/backward of a C=8 DD-2 network took
25 s with 2 threads under load, 1.5 s with 1). Subprocesses started by tests inherit the setting.
"""
import os

os.environ.setdefault('OMP_NUM_THREADS', '1')
os.environ.setdefault('MKL_NUM_THREADS', '1')
os.environ.setdefault('MPLBACKEND', 'Agg')

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` run only where a CUDA GPU is present (``.ci/gpu_check.sh``); elsewhere they skip."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason='needs a CUDA GPU')
    for item in items:
        if item.get_closest_marker('cuda') is not None:
            item.add_marker(skip)
