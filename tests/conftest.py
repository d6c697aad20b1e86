"""Suite-wide settings.

Tests run small tensors, where OpenMP threads cost more than they give, and a loaded 2-core machine makes
busy-waiting threads catastrophically slow (measured: one forward/backward of a C=8 DD-2 network took
25 s with 2 threads under load, 1.5 s with 1). Subprocesses started by tests inherit the setting.
"""
import os

os.environ.setdefault('OMP_NUM_THREADS', '1')
os.environ.setdefault('MKL_NUM_THREADS', '1')
os.environ.setdefault('MPLBACKEND', 'Agg')

import torch  # noqa: E402

torch.set_num_threads(1)
