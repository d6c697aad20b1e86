"""The shipped weight folders describe the model as timm loads it; their cards say how to get ddarts-zoo."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import timm

import ddarts_zoo  # noqa: F401  (registers the models)
from ddarts_zoo.complexity import count_macs, count_params
from ddarts_zoo.export import install_note
from ddarts_zoo.weights import PRETRAINED_TAGS, local_weights_dir

pytestmark = pytest.mark.skipif(not PRETRAINED_TAGS, reason='no published weights in ddarts_zoo/weights/')


def _card_body(card: str) -> list:
    """The card's lines after its YAML header."""
    assert card.startswith('---\n')
    return card.split('\n---\n', 1)[1].lstrip('\n').splitlines()


@pytest.mark.parametrize('name', sorted(PRETRAINED_TAGS))
def test_card_and_config_count_the_loaded_model(name):
    folder = local_weights_dir(name)
    config = json.loads((folder / 'config.json').read_text())
    model = timm.create_model(f'local-dir:{folder}', pretrained=True)
    params = count_params(model, include_aux=False)
    macs = count_macs(model, tuple(config['pretrained_cfg']['input_size']))
    assert (config['ddarts_zoo']['params'], config['ddarts_zoo']['macs']) == (params, macs)
    body = _card_body((folder / 'README.md').read_text())
    assert body[0] == f'# {name}'
    assert body[2:3] == install_note(config['architecture'])  # the first lines after the title
    shown = f'{params / 1e6:.3f}M' if params >= 1e5 else f'{params:,}'
    assert any(line.startswith(f'- **Parameters**: {shown} ') for line in body), shown


@pytest.mark.slow  # a fresh interpreter
def test_install_note_quotes_what_timm_says_without_ddarts_zoo():
    name = sorted(PRETRAINED_TAGS)[0]
    folder = local_weights_dir(name)
    arch = json.loads((folder / 'config.json').read_text())['architecture']
    code = f'import timm; timm.create_model("local-dir:{folder}", pretrained=True)'
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    quoted = f'RuntimeError: Unknown model ({arch})'
    assert quoted in proc.stderr and quoted in install_note(arch)[0]
    assert 'pip install ddarts-zoo' in install_note(arch)[0] and 'import ddarts_zoo' in install_note(arch)[0]
