"""Our reading of a pretrained cfg's weight source agrees with timm's own.

timm has no public function that says where ``pretrained=True`` will load from; ``ddarts_zoo.pretrained``
resolves it itself (to fetch and check the file before timm does, and to name it in errors). This test
compares that resolution with timm's private resolver on every kind of source, so an upgrade of timm that
changes its priority order fails here instead of silently loading other weights than the errors name.
"""
import pytest

from ddarts_zoo.pretrained import WEIGHTS_FILE, resolve_weights_source

timm_builder = pytest.importorskip('timm.models._builder')

CFGS = {
    'hub id only': dict(hf_hub_id='org/model'),
    'hub id with revision': dict(hf_hub_id='org/model@v2'),
    'hub id with filename': dict(hf_hub_id='org/model', hf_hub_filename='other.safetensors'),
    'hf-hub source': dict(source='hf-hub', hf_hub_id='org/model', file='ignored.pth'),
    'local-dir source': dict(source='local-dir', file='/weights/dir', hf_hub_id='org/model'),
    'file over hub id': dict(file='/weights/w.safetensors', hf_hub_id='org/model', url='https://x/w.pth'),
    'state_dict over file': dict(state_dict={'w': 1}, file='/weights/w.pth'),
    'url only': dict(url='https://example.org/w.pth'),
    'hub id over url': dict(hf_hub_id='org/model', url='https://example.org/w.pth'),
    'nothing': dict(),
}


def _as_timm_location(source):
    """Our resolved source in the (kind, location) form timm's resolver returns."""
    if source.kind == 'hf-hub':
        hub_id = source.repo_id + (f'@{source.revision}' if source.revision else '')
        return source.kind, hub_id, source.filename
    if source.kind == 'state_dict':
        return source.kind, None, None
    return source.kind, source.path or '', None


@pytest.mark.parametrize('name', sorted(CFGS))
def test_weight_source_priority_matches_timm(name):
    cfg = CFGS[name]
    timm_kind, timm_loc = timm_builder._resolve_pretrained_source(dict(cfg))
    ours = _as_timm_location(resolve_weights_source(cfg))
    assert ours[0] == timm_kind, f'{name}: timm loads from {timm_kind!r}, we resolve {ours[0]!r}'
    if timm_kind == 'hf-hub':
        hub_id, filename = timm_loc if isinstance(timm_loc, tuple) else (timm_loc, None)
        assert ours[1] == hub_id
        # without hf_hub_filename timm tries its default names; we check model.safetensors first
        assert ours[2] == (filename or WEIGHTS_FILE)
    elif timm_kind != 'state_dict':
        assert ours[1] == (timm_loc or '')
