"""AMP in the search step: CUDA's float16 + GradScaler path, run on the CPU (overflow included), and on CUDA."""
import pytest
import torch

from search.config import SearchConfig
from search.presets import preset
from search.searcher import Searcher



def searcher(tmp_path, name, **kw):
    values = dict(preset('tiny'), out=str(tmp_path), name=name, progress=False, tensorboard=False, plots=False,
                  preset='tiny')
    values.update(kw)
    s = Searcher(SearchConfig(**values))
    x, y = next(iter(s.a_loader))
    return s, x.to(s.ctx.device), y.to(s.ctx.device)


def snapshot(s):
    return [a.detach().clone() for a in s.net.alphas], [p.detach().clone() for p in s.updates.w_params]


def moved(before, after):
    return [not torch.equal(b, a) for b, a in zip(before, after)]


def check_float16_scaler_path(s, x, y):
    updates = s.updates
    assert updates.a_scaler.is_enabled() and updates.w_scaler.is_enabled()
    with updates.autocast():
        assert s.net(x).dtype == torch.float16
    alphas, weights = snapshot(s)
    for k in range(8):   # the initial scale (2 ** 16) may overflow: GradScaler halves it until it fits
        updates.arch_step(x, y, 0, k)
        assert updates.weight_step(x, y, 0, k) is not None   # an overflow still reports the loss
        new_alphas, new_weights = snapshot(s)
        if all(moved(alphas, new_alphas)) and any(moved(weights, new_weights)):
            break
    assert all(moved(alphas, new_alphas)) and sum(moved(weights, new_weights)) > len(weights) // 2
    assert all(a.dtype == torch.float32 for a in s.net.alphas)
    assert updates.nonfinite_skipped == 0

    # force an overflow: with this loss scale the scaled loss and gradients are inf
    for scaler in (updates.a_scaler, updates.w_scaler):
        scaler.update(new_scale=3e38)
    alphas, weights = snapshot(s)
    assert updates.arch_step(x, y, 0, 1) is None                     # skipped ...
    updates.weight_step(x, y, 0, 1)
    after_alphas, after_weights = snapshot(s)
    assert not any(moved(alphas, after_alphas)) and not any(moved(weights, after_weights))   # ... nothing moved
    for scaler in (updates.a_scaler, updates.w_scaler):
        assert scaler.get_scale() < 3e38                           # ... and the scale was lowered
    assert updates.nonfinite_skipped == 0                            # an fp16 overflow is not an error

    for scaler in (updates.a_scaler, updates.w_scaler):                # a sane scale: the updates apply again
        scaler.update(new_scale=2.0 ** 10)
    assert updates.arch_step(x, y, 0, 2) is not None and updates.weight_step(x, y, 0, 2) is not None
    assert all(moved(after_alphas, snapshot(s)[0]))


def test_float16_grad_scaler_path_on_cpu(tmp_path):
    s, x, y = searcher(tmp_path, 'fp16', amp=True, amp_dtype='float16')
    check_float16_scaler_path(s, x, y)


def test_amp_dtype_defaults_and_errors(tmp_path):
    s, x, y = searcher(tmp_path, 'bf16', amp=True)
    assert s.updates.amp_dtype == torch.bfloat16 and not s.updates.a_scaler.is_enabled()
    with pytest.raises(ValueError, match='--amp-dtype'):
        SearchConfig(amp=True, amp_dtype='float8').check()
    with pytest.raises(ValueError, match='--cuda-graphs'):
        SearchConfig(cuda_graphs=True, device='cpu').check()


@pytest.mark.cuda
@pytest.mark.parametrize('graphs', [False, True])
def test_float16_grad_scaler_path_on_cuda(tmp_path, graphs):
    s, x, y = searcher(tmp_path, f'cuda-{graphs}', amp=True, device='cuda', cuda_graphs=graphs)
    assert s.updates.amp_dtype == torch.float16
    if graphs:   # capture first (two eager warm-up calls, then the capture), then check the replayed steps
        for k in range(3):
            s.updates.arch_step(x, y, 0, k)
            s.updates.weight_step(x, y, 0, k)
        assert s.updates._arch_call.captured and s.updates._weight_call.captured
    check_float16_scaler_path(s, x, y)
