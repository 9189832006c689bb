"`topocl screen`: the report it writes, topology against pixels on the synthetic set, bad input, real BreastMNIST."
import json, os
import numpy as np
import pytest

from topocl import data
from topocl.cli import main
from topocl.screen import FEATURE_SETS, ScreenSettings, screen

FILES = ['report.md', 'screen.json', 'screen.png', 'table.csv', 'table.json']
FAST = dict(n_boot=200, n_perm=200)   # resamples enough for a test, a tenth of the defaults' time (`ScreenSettings`)

def cli(capsys, *argv):
    "`topocl` in this process (a subprocess would add ~4 s of imports): exit status and stderr."
    return run(capsys, *argv)[::2]

def run(capsys, *argv):
    "`topocl` in this process: exit status, stdout and stderr."
    rc = main(list(map(str, argv)))
    printed = capsys.readouterr()
    return rc, printed.out, printed.err

def test_cli_writes_the_report(tmp_path, isolated_env, capsys):
    out = tmp_path/'screen'
    rc, said, err = run(capsys, 'screen', '--dataset', 'synthetic', '--limit', 150, '--out-dir', out, '--n-boot', 200, '--n-perm', 200)
    assert rc == 0, err
    assert 'Verdict:' in said and 'pixels+topology' in said
    assert sorted(os.listdir(out)) == FILES   # no temporary file left behind
    assert json.loads(said[said.index('{\n'):])['report'] == str(out/'report.md')
    md = (out/'report.md').read_text()
    assert md.startswith('# Topology screen: synthetic, 28 px') and '](screen.png)' in md and 'p = ' in md
    assert (out/'screen.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    summary = json.loads((out/'screen.json').read_text())
    assert summary['info']['images'] == {'train': 150, 'val': 150, 'test': 150}
    assert set(summary['seconds']) >= {'load', 'roi', 'diagrams', 'features', 'fit', 'test', 'figure', 'write'}

def test_topology_beats_pixels_on_synthetic(isolated_env):
    res = screen('synthetic', settings=ScreenSettings(limit=300, figure=False, **FAST))
    t = res.table.set_index('features')
    assert list(t.index) == list(FEATURE_SETS)
    assert t.loc['topology', 'auc'] > t.loc['pixels', 'auc'] + 0.15, t
    assert t.loc['topology', 'auc_lo'] > t.loc['pixels', 'auc_hi']
    c = res.comparisons.set_index(['treatment', 'metric'])
    assert c.loc[('pixels+topology', 'auc'), 'diff'] > 0.1 and c.loc[('pixels+topology', 'auc'), 'p'] < 0.01
    assert 'carries class signal that pixels miss' in res.verdict

@pytest.mark.parametrize('argv, field', [
    (['--dataset', 'nosuchset'], 'dataset: unknown data set'),
    (['--limit', '0'], 'limit: expected a positive integer'),
    (['--limit', '-3'], 'limit: expected a positive integer'),
    (['--n-boot', '0'], 'n_boot'),
])
def test_bad_options_name_the_field(tmp_path, capsys, isolated_env, argv, field):
    rc, err = cli(capsys, 'screen', *argv, '--out-dir', tmp_path/'out')
    assert rc == 2 and f'topocl screen: error: {field}' in err and 'Traceback' not in err, err
    assert not (tmp_path/'out').exists()   # refused before a folder was made

def test_unwritable_out_dir(tmp_path, capsys, isolated_env):
    (tmp_path/'file').write_text('')
    rc, err = cli(capsys, 'screen', '--limit', 20, '--out-dir', tmp_path/'file'/'sub')
    assert rc == 2 and 'out_dir: cannot write to' in err and str(tmp_path/'file'/'sub') in err, err

def test_a_split_with_one_class(tmp_path, capsys, isolated_env, monkeypatch):
    def one_class(split, root=None, size=28):
        x, y = data.load_dataset('synthetic', split, size=size, n=20)
        return x, (np.zeros_like(y) if split == 'test' else y)
    monkeypatch.setitem(data.DATASETS, 'oneclass', one_class)
    rc, err = cli(capsys, 'screen', '--dataset', 'oneclass', '--out-dir', tmp_path/'out')
    assert rc == 2 and "labels: the 'test' split holds one class only" in err, err
    assert not (tmp_path/'out'/'report.md').exists()

def test_missing_real_data_is_one_line(tmp_path, capsys):
    rc, err = cli(capsys, 'screen', '--dataset', 'breastmnist', '--root', tmp_path, '--out-dir', tmp_path/'out')
    assert rc == 2 and 'breastmnist' in err and 'Traceback' not in err, err

@pytest.mark.parametrize('size', [28, 64])
def test_real_breastmnist(medmnist_root, tmp_path, size):
    f = medmnist_root/('breastmnist.npz' if size == 28 else f'breastmnist_{size}.npz')
    if not f.exists(): pytest.skip(f'{f} is absent (the official MedMNIST+ file; never downloaded by tests)')
    res = screen('breastmnist', medmnist_root, size, tmp_path, ScreenSettings(limit=200, **FAST))
    assert res.info['images'] == {'train': 200, 'val': 78, 'test': 156}
    assert res.info['classes'] == ['malignant', 'normal, benign']
    t = res.table.set_index('features')
    assert t.loc['pixels', 'auc'] > 0.65 and t.loc['topology', 'auc'] > 0.6, t   # both well above chance
    assert (t.auc_lo <= t.auc).all() and (t.auc <= t.auc_hi).all()
    assert sorted(os.listdir(tmp_path)) == FILES
    assert f'On breastmnist ({size} px' in (tmp_path/'report.md').read_text()
