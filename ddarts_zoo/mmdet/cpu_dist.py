"""Distributed detection training on CPU (gloo) under ``torchrun``.

mmengine 0.10.7's launcher cannot do it alone: ``init_dist('pytorch')`` always calls
``torch.cuda.set_device``, and ``Runner.wrap_model`` passes ``device_ids=[LOCAL_RANK]``, which
``DistributedDataParallel`` refuses for a CPU module. :func:`prepare_cpu_distributed` joins the gloo group
first (the ``Runner`` then skips ``init_dist``) and selects :class:`CPUDistributedDataParallel`.
"""
from __future__ import annotations

import torch
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS

from ..errors import UserError
from ..utils.dist import init_distributed

__all__ = ['CPUDistributedDataParallel', 'prepare_cpu_distributed']


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` for a module on the CPU: ignores the ``device_ids`` the Runner passes."""

    def __init__(self, module: torch.nn.Module, device_ids=None, **kwargs) -> None:
        super().__init__(module=module, device_ids=None, **kwargs)


def prepare_cpu_distributed(cfg) -> bool:
    """For ``launcher='pytorch'`` on a machine without CUDA: join the gloo group and wrap the model for CPU.

    Returns whether it did. ``env_cfg.dist_cfg.backend`` must then be ``gloo`` (the error names the field).
    """
    if cfg.get('launcher', 'none') != 'pytorch' or torch.cuda.is_available():
        return False
    backend = (cfg.get('env_cfg') or {}).get('dist_cfg', {}).get('backend', 'gloo')
    if backend != 'gloo':
        raise UserError(f"env_cfg.dist_cfg.backend={backend!r} needs GPUs and this machine has none; "
                        f"on CPU pass --cfg-options env_cfg.dist_cfg.backend=gloo")
    init_distributed('cpu')
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    if wrapper.get('type', 'MMDistributedDataParallel') != 'MMDistributedDataParallel':
        raise UserError(f"model_wrapper_cfg.type={wrapper['type']!r}: on CPU only the default "
                        f"MMDistributedDataParallel can be replaced by CPUDistributedDataParallel")
    wrapper.update(type='CPUDistributedDataParallel')
    wrapper.setdefault('broadcast_buffers', False)
    wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
    cfg.model_wrapper_cfg = wrapper
    return True
