"""A skipped step leaves no trace (BN statistics included), no checkpoint holds a NaN/inf, and a non-finite
evaluation is a named warning."""
import warnings

import pytest
import torch

from search.checkpoint import load_checkpoint
from search.nonfinite import NonFiniteEvaluationWarning, nonfinite_tensors, warn_nonfinite_metrics
from search.searcher import Searcher
from search.step import NonFiniteLossError
from search_configs import tiny


def searcher(tmp_path, name, **kw):
    s = Searcher(tiny(tmp_path, name, **kw))
    x, y = next(iter(s.a_loader))
    return s, x, y


def full_state(s):
    """Every tensor of the search state (supernet parameters and buffers, optimizers), cloned, by name."""
    state = {'model': s.net.state_dict(), **s.updates.state_dict()}
    out = {}

    def walk(v, name):
        if isinstance(v, torch.Tensor):
            out[name] = v.detach().clone()
        elif isinstance(v, dict):
            for k, w in v.items():
                walk(w, f'{name}.{k}')
        elif isinstance(v, (list, tuple)):
            for i, w in enumerate(v):
                walk(w, f'{name}.{i}')
    walk(state, 'state')
    return out


def assert_identical(before, after):
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, f'changed by a skipped step: {changed[:5]}'


def running_stats(s):
    return [b for n, b in s.net.named_buffers() if n.endswith(('running_mean', 'running_var'))]


def test_skipped_steps_leave_every_tensor_as_it_was(tmp_path):
    s, x, y = searcher(tmp_path, 'nan', max_nonfinite=10)
    s.updates.arch_step(x, y, 0, 0)                  # one healthy step: optimizer states exist
    s.updates.weight_step(x, y, 0, 0)
    x_bad = x.clone()
    x_bad[:, :, 0, 0] = float('nan')
    before = full_state(s)
    assert s.updates.arch_step(x_bad, y, 0, 1) is None
    assert s.updates.weight_step(x_bad, y, 0, 1) is None
    assert s.updates.nonfinite_skipped == 2
    assert_identical(before, full_state(s))
    # not vacuous: the forward pass of such a step does poison the BN running statistics
    s.net(x_bad)
    assert any(not torch.isfinite(b).all() for b in running_stats(s))


def test_float16_overflow_restores_bn_statistics(tmp_path):
    """The CUDA precision path on the CPU: float16 autocast and a GradScaler whose scale overflows."""
    s, x, y = searcher(tmp_path, 'fp16', amp=True, amp_dtype='float16')
    s.updates.arch_step(x, y, 0, 0)                  # the scalers' state exists after a first step
    s.updates.weight_step(x, y, 0, 0)
    for scaler in (s.updates.a_scaler, s.updates.w_scaler):
        scaler.update(new_scale=3e38)
    before = full_state(s)
    assert s.updates.arch_step(x, y, 0, 1) is None
    assert s.updates.weight_step(x, y, 0, 1) is not None     # an overflow reports the loss, skips the update
    after = full_state(s)
    scales = [k for k in before if 'scaler' in k]
    assert_identical({k: v for k, v in before.items() if k not in scales},
                     {k: v for k, v in after.items() if k not in scales})
    assert s.updates.a_scaler.get_scale() < 3e38 and s.updates.nonfinite_skipped == 0
    # not vacuous: the forward pass changed the running statistics, which were put back
    s.net(x)
    assert any(not torch.equal(a, b) for a, b in zip(running_stats(s), [before[f'state.model.{n}'] for n, _ in
               s.net.named_buffers() if n.endswith(('running_mean', 'running_var'))]))


@pytest.mark.slow
def test_a_diverging_search_never_checkpoints_a_nan(tmp_path):
    """``--lr 1e6 --nonfinite skip``: the weights explode, steps are skipped, the evaluation is NaN.

    Before skipped steps restored the BN statistics, this run's checkpoint held 117 non-finite BN running
    statistics.
    """
    cfg = tiny(tmp_path, 'lr', lr=1e6, nonfinite='skip', max_nonfinite=1000, epochs=2, max_steps_per_epoch=5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        res = Searcher(cfg).run()
    assert res.epochs_completed == 2
    assert sum(h['nonfinite_skipped'] > 0 for h in res.history) >= 1
    ckpt = load_checkpoint(res.run_dir)
    assert nonfinite_tensors(ckpt) == []
    assert all(torch.isfinite(v).all() for v in ckpt['model'].values() if v.is_floating_point())
    named = [w for w in caught if issubclass(w.category, NonFiniteEvaluationWarning)]
    nan_epochs = [h['epoch'] for h in res.history if h['valid_loss'] != h['valid_loss']]
    assert nan_epochs and len(named) == len(nan_epochs)
    assert f'epoch {nan_epochs[0]}: non-finite valid_loss nan' in str(named[0].message)
    assert 'WARNING: epoch' in (res.run_dir / 'search.log').read_text()


def test_metric_warning_and_tensor_scan():
    with pytest.warns(NonFiniteEvaluationWarning, match=r'epoch 3: non-finite valid_loss inf, train_loss nan'):
        assert warn_nonfinite_metrics({'epoch': 3, 'valid_loss': float('inf'), 'train_loss': float('nan'),
                                       'valid_acc': 0.5})
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert warn_nonfinite_metrics({'epoch': 1, 'valid_loss': 0.1, 'arch_ce': None}) is None
    state = {'model': {'a': torch.zeros(2), 'n': torch.tensor(3)}, 'opt': [{'m': torch.tensor([1.0, float('nan')])}]}
    assert nonfinite_tensors(state) == ['opt.0.m']


def test_a_state_holding_a_nan_is_never_checkpointed(tmp_path):
    """Whatever made a tensor NaN (here: a callback, after the last step of epoch 2), its epoch's checkpoint
    is refused with an error naming the tensor, and epoch 1's checkpoint stays."""
    def poison(searcher, epoch, step):
        if epoch == 1 and step == 1:
            with torch.no_grad():
                searcher.net.alphas[0][0, 0] = float('nan')

    s = Searcher(tiny(tmp_path, 'poisoned', epochs=2, max_steps_per_epoch=2, eval=False), step_callback=poison)
    with pytest.raises(NonFiniteLossError, match=r'epoch 2: 1 tensor\(s\) of the search state hold NaN/inf '
                                                 r'\(model.alphas.0\); its checkpoint was not written'):
        s.run()
    assert load_checkpoint(tmp_path / 'poisoned')['epoch'] == 1
