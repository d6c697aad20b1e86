"""Published weights through the Hub path (local olah server), export / publish, and actionable errors."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import timm
import torch

import ddarts_zoo  # noqa: F401
from ddarts_zoo.export import export_model, publish_folder
from ddarts_zoo.pretrained import (CorruptWeightsError, PretrainedWeightsError, WeightsMismatchError,
                                   WeightsUnavailableError)
from ddarts_zoo.weights import PRETRAINED_TAGS, PUBLISHED, TAG_MODEL_ARGS, local_weights_dir, published_tags

from local_hub import CORRUPT_REPO
from ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
DD1 = 'ddarts_dd1_cifar.digits'
DD5 = 'ddarts_dd5_cifar.digits'
pytestmark = pytest.mark.skipif(not PRETRAINED_TAGS, reason='no published weights in ddarts_zoo/weights/')


def recorded(name_tag: str) -> dict:
    return json.loads((local_weights_dir(name_tag) / 'config.json').read_text())['ddarts_zoo']


@torch.no_grad()
def digits_top1(model: torch.nn.Module) -> float:
    from ddarts_zoo.data import build_dataset
    ds = build_dataset('digits', 'test')
    model.eval()
    logits = torch.cat([model(ds.images[i:i + 128]) for i in range(0, len(ds), 128)])
    return 100.0 * int((logits.argmax(1) == ds.labels).sum()) / len(ds)  # as `ddarts-zoo train` computes it


def same_weights(a: torch.nn.Module, b: torch.nn.Module, skip: str = '') -> bool:
    sb = b.state_dict()
    return all(torch.equal(v, sb[k]) for k, v in a.state_dict().items() if not (skip and k.startswith(skip)))


# ---------------------------------------------------------------------------------------------- registry
def test_published_tags_are_registered_and_consistent():
    from ddarts_zoo import weights
    assert weights.HUB_ORG == 'ddarts-zoo'  # the one organisation of the published repos
    assert DD1 in PRETRAINED_TAGS and DD5 in PRETRAINED_TAGS
    assert set(timm.list_pretrained('ddarts_*')) >= {DD1, DD5}
    assert published_tags('ddarts_dd1_cifar') == [DD1]
    assert published_tags('ddarts_dd2_cifar') == []
    for name_tag in PRETRAINED_TAGS:
        folder = local_weights_dir(name_tag)
        assert {p.name for p in folder.iterdir()} >= {'model.safetensors', 'config.json', 'README.md'}
        assert (folder / 'model.safetensors').stat().st_size < 4 * 2 ** 20
        config = json.loads((folder / 'config.json').read_text())
        dataset, args = PUBLISHED[name_tag]
        assert config['architecture'] == name_tag.split('.')[0]
        assert {k: config['model_args'][k] for k in args} == args == TAG_MODEL_ARGS[name_tag]
        cfg = PRETRAINED_TAGS[name_tag]
        assert cfg['hf_hub_filename'] == 'model.safetensors' and cfg['hf_hub_id'] == f'ddarts-zoo/{name_tag}'
        assert tuple(config['pretrained_cfg']['input_size']) == cfg['input_size'] == (1, 32, 32)
        assert recorded(name_tag)['top1'] >= 97.0


def test_untagged_name_stays_the_paper_configuration():
    model = timm.create_model('ddarts_dd1_cifar')
    assert model.in_chans == 3 and model.pretrained_cfg.get('tag') in (None, '')
    assert model.cells[0].preprocess1[1].out_channels == 36
    narrow = timm.create_model(DD1)  # naming the tag brings its architecture arguments (no weights)
    assert narrow.in_chans == 1 and narrow.cells[0].preprocess1[1].out_channels == TAG_MODEL_ARGS[DD1]['init_channels']


def test_local_dir_needs_no_server():
    model = timm.create_model(f'local-dir:{local_weights_dir(DD5)}', pretrained=True)
    assert abs(digits_top1(model) - recorded(DD5)['top1']) < 1e-9


# ---------------------------------------------------------------------------------------------- Hub path
@pytest.mark.hub
@pytest.mark.slow
def test_tag_downloads_through_hub_and_reproduces_accuracy(hub, tmp_path):
    """A fresh interpreter with HF_ENDPOINT set before anything imports huggingface_hub."""
    code = textwrap.dedent(f'''
        import json, os, sys, torch, timm, ddarts_zoo
        sys.path[:0] = [{str(Path(__file__).parent)!r}, {str(Path(__file__).parent.parent)!r}]
        from test_hub import digits_top1
        model = timm.create_model({DD1!r}, pretrained=True)
        cached = [p for p in os.scandir(os.path.join(os.environ['HF_HOME'], 'hub'))]
        print(json.dumps(dict(top1=digits_top1(model), cached=sorted(p.name for p in cached))))
    ''')
    home = tmp_path / 'hf'
    res = subprocess.run([sys.executable, '-c', code], env=hub.subprocess_env(home), cwd=tmp_path,
                         capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert abs(out['top1'] - recorded(DD1)['top1']) < 1e-9
    assert f'models--ddarts-zoo--{DD1}' in out['cached']


@pytest.mark.hub
def test_in_process_hub_names(hub_env):
    tagged = timm.create_model(DD5, pretrained=True)
    by_repo = timm.create_model(f'hf-hub:ddarts-zoo/{DD5}', pretrained=True)
    local = timm.create_model(f'local-dir:{local_weights_dir(DD5)}', pretrained=True)
    assert same_weights(tagged, local) and same_weights(by_repo, local)
    assert tagged.pretrained_cfg['hf_hub_id'] == f'ddarts-zoo/{DD5}'
    from huggingface_hub import constants  # the download went to the test's HF_HOME, not the user's cache
    assert Path(constants.HF_HUB_CACHE, f'models--ddarts-zoo--{DD5}').is_dir()


@pytest.mark.hub
def test_server_listens_on_loopback_only(hub):
    port = int(hub.endpoint.rsplit(':', 1)[1])
    tables = [Path('/proc/net/tcp'), Path('/proc/net/tcp6')]
    if not tables[0].exists():
        pytest.skip('needs Linux /proc/net/tcp')
    listening = []
    for table in tables:
        if table.exists():
            for line in table.read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                addr, hex_port = local.split(':')
                if state == '0A' and int(hex_port, 16) == port:  # 0A = LISTEN
                    listening.append(addr)
    assert listening and set(listening) <= {'0100007F'}, listening  # 127.0.0.1 only


@pytest.mark.hub
def test_warm_cache_works_offline(hub_env, monkeypatch):
    from huggingface_hub import constants
    online = timm.create_model(DD1, pretrained=True)
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    offline = timm.create_model(DD1, pretrained=True)
    assert same_weights(online, offline)
    msg = _raises_fast(WeightsUnavailableError, model_name=DD5, pretrained=True)  # not cached yet
    assert 'HF_HUB_OFFLINE' in msg and f'ddarts-zoo/{DD5}' in msg


@pytest.mark.hub
def test_features_only_with_pretrained_weights(hub_env):
    feats = timm.create_model(DD1, pretrained=True, features_only=True, out_indices=(0, 1, 2))
    full = timm.create_model(f'local-dir:{local_weights_dir(DD1)}', pretrained=True).eval()
    feats.eval()
    x = torch.randn(2, 1, 32, 32)
    outs = feats(x)
    assert [o.shape[-1] for o in outs] == [32, 16, 8]
    assert feats.feature_info.channels() == [o.shape[1] for o in outs]
    with torch.no_grad():
        assert torch.equal(outs[-1], full.forward_features(x))


@pytest.mark.hub
def test_other_num_classes_reinitialises_the_classifier(hub_env):
    model = timm.create_model(DD1, pretrained=True, num_classes=5)
    ref = timm.create_model(f'local-dir:{local_weights_dir(DD1)}', pretrained=True)
    assert model.classifier.weight.shape == (5, ref.num_features)
    assert same_weights(model, ref, skip='classifier.')


# ---------------------------------------------------------------------------------------------- errors
def _raises_fast(exc, limit_s: float = 8.0, **create_kwargs):
    tic = time.monotonic()
    with pytest.raises(exc) as info:
        timm.create_model(**create_kwargs)
    assert time.monotonic() - tic < limit_s, 'the error must come within seconds, not after retries'
    return str(info.value)


@pytest.mark.hub
def test_unreachable_hub_fails_fast_with_the_alternatives(hub_env, monkeypatch):
    from huggingface_hub import constants
    dead = f'http://127.0.0.1:{free_port()}'
    monkeypatch.setattr(constants, 'ENDPOINT', dead)
    monkeypatch.setattr(constants, 'HUGGINGFACE_CO_URL_TEMPLATE', dead + '/{repo_id}/resolve/{revision}/{filename}')
    msg = _raises_fast(WeightsUnavailableError, model_name=DD1, pretrained=True)
    for part in (DD1, f'ddarts-zoo/{DD1}', 'model.safetensors', dead, 'local-dir:', 'pretrained_cfg_overlay'):
        assert part in msg, (part, msg)


@pytest.mark.hub
def test_missing_repo_names_repo_and_endpoint(hub_env):
    msg = _raises_fast(WeightsUnavailableError, model_name=DD1, pretrained=True,
                       pretrained_cfg_overlay=dict(hf_hub_id='ddarts-zoo/not-there'))
    assert 'ddarts-zoo/not-there' in msg and hub_env.endpoint in msg and 'does not exist' in msg


@pytest.mark.hub
def test_truncated_file_on_the_hub_names_the_file(hub_env):
    msg = _raises_fast(CorruptWeightsError, model_name=DD1, pretrained=True,
                       pretrained_cfg_overlay=dict(hf_hub_id=CORRUPT_REPO))
    assert 'model.safetensors' in msg and 'corrupt.digits' in msg


def test_truncated_local_file_names_the_file(tmp_path):
    bad = tmp_path / 'cut.safetensors'
    data = (local_weights_dir(DD1) / 'model.safetensors').read_bytes()
    bad.write_bytes(data[:1000])
    msg = _raises_fast(CorruptWeightsError, model_name=DD1, pretrained=True,
                       pretrained_cfg_overlay=dict(file=str(bad)))
    assert str(bad) in msg
    garbage = tmp_path / 'model.safetensors'
    garbage.write_bytes(b'not a safetensors file at all')
    shutil.copy(local_weights_dir(DD1) / 'config.json', tmp_path / 'config.json')
    with pytest.raises(CorruptWeightsError, match='model.safetensors'):
        timm.create_model(f'local-dir:{tmp_path}', pretrained=True)


def test_random_pickle_weights_file_names_file_and_size(tmp_path):
    """A ``.pth`` / ``.bin`` weights file is read with ``weights_only=True``; garbage is a named error."""
    bad = tmp_path / 'weights.bin'
    bad.write_bytes(bytes(range(256)) * 8)
    msg = _raises_fast(CorruptWeightsError, model_name=DD1, pretrained=True,
                       pretrained_cfg_overlay=dict(file=str(bad)))
    assert f'{bad} (2048 bytes): not a PyTorch tensor file' in msg and 'weights_only' not in msg


def test_shape_mismatch_names_the_keys():
    with pytest.raises(WeightsMismatchError) as info:
        timm.create_model(DD1, pretrained=True, init_channels=6,
                          pretrained_cfg_overlay=dict(file=str(local_weights_dir(DD1) / 'model.safetensors')))
    msg = str(info.value)
    assert 'stem.0.weight' in msg and 'model_args' in msg


def test_hub_errors_are_recognised_by_type_not_by_name():
    import httpx
    from huggingface_hub import errors
    from safetensors import SafetensorError

    from ddarts_zoo.pretrained import pretrained_errors
    for exc, translated in ((errors.LocalEntryNotFoundError('not in the cache'), WeightsUnavailableError),
                            (errors.OfflineModeIsEnabled('offline'), WeightsUnavailableError),
                            (httpx.ConnectError('connection refused'), WeightsUnavailableError),
                            (SafetensorError('bad file'), CorruptWeightsError)):
        with pytest.raises(translated) as info:
            with pretrained_errors(DD1, None):
                raise exc
        assert info.value.__cause__ is exc
    impostor = type('RepositoryNotFoundError', (Exception,), {})('same name, another type')
    with pytest.raises(type(impostor)):
        with pretrained_errors(DD1, None):
            raise impostor


def test_architecture_without_weights():
    with pytest.raises(PretrainedWeightsError, match='no pretrained weights'):
        timm.create_model('ddarts_dd1_cifar', pretrained=True)


# ---------------------------------------------------------------------------------------------- export / publish
def test_export_round_trip_and_atomic_replace(tmp_path, monkeypatch):
    model = timm.create_model('ddarts_dd2_cifar', init_channels=4, num_classes=10).eval()
    out = tmp_path / 'dd2-export'
    (out).mkdir()
    (out / 'stale.txt').write_text('old')
    metrics = dict(top1=12.5, top5=50.0, split='test', num_images=359, dataset='digits',
                   recipe=dict(lr=0.025, epochs=1), train_time_s=1.0, device='cpu')
    export_model(model, out, model_name='ddarts_dd2_cifar', model_args=dict(init_channels=4), dataset='cifar10',
                 metrics=metrics, repo_id='me/dd2')
    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]  # no temporary folder left
    config = json.loads((out / 'config.json').read_text())
    assert config['architecture'] == 'ddarts_dd2_cifar' and config['model_args']['init_channels'] == 4
    assert config['num_classes'] == 10 and list(config['pretrained_cfg']['mean']) == [0.4914, 0.4822, 0.4465]
    card = (out / 'README.md').read_text()
    assert 'hf-hub:me/dd2' in card and '12.50' in card and 'Apache-2.0' in card and 'D-DARTS' in card
    again = timm.create_model(f'local-dir:{out}', pretrained=True).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    # model arguments must be JSON; a failure half-way leaves the previous folder untouched
    with pytest.raises(TypeError):
        export_model(model, out, model_name='ddarts_dd2_cifar', model_args=dict(bad=object()), dataset='cifar10')
    import ddarts_zoo.export as export_module

    def broken_card(**kwargs):
        raise RuntimeError('disk full')
    monkeypatch.setattr(export_module, 'model_card', broken_card)
    with pytest.raises(RuntimeError, match='disk full'):
        export_model(model, out, model_name='ddarts_dd2_cifar', model_args=dict(init_channels=4), dataset='cifar10')
    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]


def test_export_cli_from_a_training_checkpoint(tmp_path, capsys):
    from ddarts_zoo.cli import main
    net = timm.create_model('ddarts_dd5_cifar', init_channels=4, in_chans=1, num_classes=10, auxiliary=True)
    ckpt = tmp_path / 'run' / 'checkpoint.pth'
    ckpt.parent.mkdir()
    torch.save(dict(format='ddarts-zoo/train-checkpoint', epoch=3, model_name='ddarts_dd5_cifar', dataset='digits',
                    model_args=dict(init_channels=4, in_chans=1, num_classes=10), model=net.state_dict()), ckpt)
    (ckpt.parent / 'metrics.json').write_text(json.dumps(dict(model='ddarts_dd5_cifar', top1=10.0, top5=50.0)))
    out = tmp_path / 'out'
    assert main(['export', str(ckpt), '--out', str(out), '--name', 'ddarts_dd5_cifar.test']) == 0
    config = json.loads((out / 'config.json').read_text())
    assert config['pretrained_cfg']['input_size'] == [1, 32, 32] and config['pretrained_cfg']['tag'] == 'test'
    loaded = timm.create_model(f'local-dir:{out}', pretrained=True)
    sd = net.state_dict()
    assert all(torch.equal(v, sd[k]) for k, v in loaded.state_dict().items())
    capsys.readouterr()
    assert main(['export', str(ckpt), '--out', str(out), '--model-args', '{"init_channels": 6, "in_chans": 1}']) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith('error: ') and 'Pass the --model / --model-args' in err
    assert 'stem.0.weight: checkpoint (12, 1, 3, 3) vs model (18, 1, 3, 3)' in err
    assert json.loads((out / 'config.json').read_text())['model_args']['init_channels'] == 4  # untouched


def test_publish_uploads_the_export_folder(tmp_path, monkeypatch):
    import huggingface_hub
    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls['token'] = token

        def create_repo(self, repo_id, private=False, exist_ok=False):
            calls['create'] = (repo_id, private, exist_ok)

        def upload_folder(self, **kwargs):
            calls['upload'] = kwargs
            return type('Info', (), {'commit_url': 'http://hub/commit/1'})()

    monkeypatch.setattr(huggingface_hub, 'HfApi', FakeApi)
    folder = local_weights_dir(DD1)
    assert publish_folder(folder, 'me/dd1', token='t') == 'http://hub/commit/1'
    assert calls['create'] == ('me/dd1', False, True)
    assert calls['upload']['folder_path'] == str(folder) and calls['upload']['repo_id'] == 'me/dd1'
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match='model.safetensors'):
        publish_folder(empty, 'me/x')
