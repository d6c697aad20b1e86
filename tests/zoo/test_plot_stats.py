"""Cell drawings, distance heatmaps, op statistics and their CLI commands (distance, plot, stats)."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import matplotlib.image as mpimg
import pytest

from ddarts_zoo import cli, genotypes
from ddarts_zoo.genotype import Genotype
from ddarts_zoo.plot import cell_graph, grid_shape, plot_distance_matrix, plot_genotype
from ddarts_zoo.stats import cell_widths, format_comparison, format_stats, genotype_stats, op_params

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
    assert image.std() > 0.01  # not a blank canvas


def assert_svg(path):
    root = ET.parse(path).getroot()
    assert root.tag.endswith('svg')
    assert len(list(root.iter())) > 50


def assert_pdf(path):
    data = path.read_bytes()
    assert data.startswith(b'%PDF') and b'%%EOF' in data[-64:] and len(data) > 2000


# ---------------------------------------------------------------------------- plot
def test_grid_layout_for_4_to_14_cells():
    assert grid_shape(4) == (2, 2)
    assert grid_shape(8) == (3, 3)
    assert grid_shape(13) == (4, 4) and grid_shape(14) == (4, 4)
    for n in range(1, 15):
        rows, cols = grid_shape(n)
        assert rows * cols >= n and cols <= 4 and (rows - 1) * cols < n


def test_cell_graph_draws_only_live_edges():
    # node 4's only input is node 3, which is never computed: node 4 and its edge are dead
    g = Genotype([[('sep_conv_3x3', 2, 0), ('skip_connect', 2, 1), ('dil_conv_3x3', 4, 3)]], [])
    graph = cell_graph(g, 0)
    assert set(graph.nodes) == {0, 1, 2, 'out'}
    ops = sorted(d['op'] for _, _, d in graph.edges(data=True) if d['op'])
    assert ops == ['sep_conv_3x3', 'skip_connect']
    # parallel ops of one pair stay separate edges
    r50 = cell_graph(genotypes.get('resnet50'), 0)
    assert r50.number_of_edges(0, 2) == 2


@pytest.mark.parametrize('suffix,check', [('.png', assert_png), ('.svg', assert_svg), ('.pdf', assert_pdf)])
def test_plot_genotype_formats(tmp_path, suffix, check):
    out = plot_genotype('resnet18', tmp_path / f'cells{suffix}', dpi=60)
    assert out.exists() and out.stat().st_size > 0
    check(out)


def test_plot_genotype_with_dead_edges_and_replaced_cell(tmp_path):
    # do2_xception_edge: 13 cells, dead edges, and cell 12 replaced by a skip_connect (empty_cell policy)
    out = plot_genotype(genotypes.get('do2_xception_edge'), tmp_path / 'x.png', dpi=40)
    assert_png(out)


def test_plot_rejects_unknown_extension(tmp_path):
    with pytest.raises(ValueError, match=r"\.jpg"):
        plot_genotype('resnet18', tmp_path / 'cells.jpg')


def test_plot_distance_matrix(tmp_path):
    out = plot_distance_matrix([[0.0, 0.1], [0.1, 0.0]], ['a', 'b'], tmp_path / 'h.svg')
    assert_svg(out)
    with pytest.raises(ValueError, match='labels'):
        plot_distance_matrix([[0.0, 0.1], [0.1, 0.0]], ['a'], tmp_path / 'h.png')


# ---------------------------------------------------------------------------- stats
def test_op_params_by_hand():
    c = 16
    assert op_params('simple_conv_3x3', c) == 9 * c * c + 2 * c
    assert op_params('simple_conv_3x3', c, 2) == 9 * c * c + 2 * c
    assert op_params('sep_conv_3x3', c) == 2 * (9 * c + c * c + 2 * c)
    assert op_params('bottleneck_1x3x1', c) == c * c + 9 * c * c + 4 * c * c + 4 * c * c + (2 + 2 + 8 + 2) * c
    assert op_params('skip_connect', c) == 0 and op_params('skip_connect', c, 2) == c * c + 2 * c
    assert op_params('max_pool_3x3', c, 2) == 0


def test_resnet18_stats_by_hand():
    g = genotypes.get('resnet18')
    assert cell_widths(g, 16) == (16, 32, 64, 128)  # reductions at 1, 2, 3 double C
    s = genotype_stats(g, 16)
    assert s.counts == {'skip_connect': 8, 'simple_conv_3x3': 16}
    conv = 4 * sum(9 * c * c + 2 * c for c in (16, 32, 64, 128))
    # skip (3, 0) strides (FactorizedReduce) in the reduction cells; skip (5, 3) is an identity
    skip = sum(c * c + 2 * c for c in (32, 64, 128))
    assert s.params == {'skip_connect': skip, 'simple_conv_3x3': conv}
    assert s.share()['simple_conv_3x3'] == pytest.approx(conv / (conv + skip))
    assert [c.num_edges for c in s.cells] == [6, 6, 6, 6]
    text = format_stats(s)
    assert 'param share' in text and 'simple_conv_3x3' in text and 'reduce' in text


def test_stats_count_live_edges_only():
    g = Genotype([[('sep_conv_3x3', 2, 0), ('dil_conv_3x3', 4, 3)]], [], name='dead')
    s = genotype_stats(g, 8)
    assert s.counts == {'sep_conv_3x3': 1} and s.cells[0].dead_edges == 1
    assert '1 dead edges not counted' in format_stats(s)


def test_stats_comparison_and_errors():
    a, b = genotype_stats('do1_resnet18', 16), genotype_stats('resnet18', 16)
    text = format_comparison(a, b, 0.0839)
    assert 'baseline resnet18' in text and 'bottleneck_1x3x1' in text and '0.0839' in text
    with pytest.raises(ValueError, match='width'):
        genotype_stats('resnet18', 0)


# ---------------------------------------------------------------------------- CLI
def test_cli_registers_the_commands():
    for name in ('distance', 'plot', 'stats'):
        assert cli.COMMANDS[name][0] == f'ddarts_zoo.commands.{name}'


def test_cli_distance_pair(capsys):
    assert cli.main(['distance', 'resnet18', 'resnet50']) == 0
    out = capsys.readouterr().out
    assert 'distance(resnet18, resnet50) = 0.0836' in out
    assert out.count('cell ') == 4 and 'reduction' in out


def test_cli_distance_matrix_and_heatmap(tmp_path, capsys):
    out_png = tmp_path / 'heat.png'
    assert cli.main(['distance', '--matrix', 'resnet18', 'resnet50', 'xception', '--out', str(out_png)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ['resnet18', 'resnet50', 'xception']
    assert lines[1].split()[:3] == ['resnet18', '0.0000', '0.0836']
    assert 'cell counts differ' in out and f'wrote {out_png}' in out
    assert_png(out_png)


def test_cli_distance_errors(capsys):
    assert cli.main(['distance', 'resnet18']) == 2
    assert 'exactly two' in capsys.readouterr().err
    assert cli.main(['distance', 'resnet18', 'no_such_genotype']) == 2
    assert 'no_such_genotype' in capsys.readouterr().err


def test_cli_plot(tmp_path, capsys):
    out = tmp_path / 'cells.pdf'
    assert cli.main(['plot', 'dd1', '--out', str(out)]) == 0
    assert f'wrote {out}' in capsys.readouterr().out
    assert_pdf(out)
    assert cli.main(['plot', 'dd1', '--out', str(tmp_path / 'cells.gif')]) == 2
    assert 'unsupported image type' in capsys.readouterr().err


def test_cli_stats(capsys):
    assert cli.main(['stats', 'do1_resnet18', '--width', '16', '--compare', 'resnet18']) == 0
    out = capsys.readouterr().out
    assert 'do1_resnet18: 4 cells' in out and 'width C=16' in out
    assert 'per cell:' in out and 'overall:' in out
    assert 'do1_resnet18 vs. baseline resnet18' in out and 'architecture distance:' in out
    assert cli.main(['stats', 'resnet18', '--width', '-4']) == 2
    assert 'width' in capsys.readouterr().err
