"""The `topocl` console command end to end: a subprocess per call, as a user runs it."""
import json, os, socket, subprocess, sys
from pathlib import Path
import numpy as np
import pytest

def topocl(*args, cwd=None, env=None, check=True, timeout=600):
    "Run the installed console command; returns the CompletedProcess."
    e = {**os.environ, 'OMP_NUM_THREADS': '1', **(env or {})}
    r = subprocess.run(['topocl', *map(str, args)], capture_output=True, text=True, cwd=cwd, env=e, timeout=timeout)
    if check and r.returncode != 0: raise AssertionError(f'topocl {args} failed ({r.returncode}):\n{r.stderr[-3000:]}')
    return r

def test_help_lists_every_command():
    out = topocl('--help').stdout
    for cmd in ('data', 'roi', 'calibrate', 'pretrain-visual', 'pretrain-topo', 'finetune', 'probe', 'export', 'run', 'demo',
                'sweep', 'report', 'screen'):
        assert cmd in out, cmd

def test_data_info_on_real_breastmnist(medmnist_root):
    info = json.loads(topocl('data', 'info', '--dataset', 'breastmnist', '--root', medmnist_root).stdout)
    assert {s: v['count'] for s, v in info['splits'].items()} == {'train': 546, 'val': 78, 'test': 156}

def test_missing_file_is_one_clear_line(tmp_path):
    r = topocl('data', 'info', '--dataset', 'pathmnist', '--root', tmp_path, check=False)
    assert r.returncode == 2
    assert 'pathmnist' in r.stderr and str(tmp_path) in r.stderr and 'Traceback' not in r.stderr

def test_bad_config_value_names_the_field(tmp_path):
    r = topocl('pretrain-visual', '--preset', 'tiny', '--out-dir', tmp_path, '--lr', '-1', check=False)
    assert r.returncode == 2 and 'train.lr' in r.stderr and 'Traceback' not in r.stderr
    r = topocl('pretrain-visual', '--preset', 'tiny', '--out-dir', tmp_path, '--set', 'train.nope=1', check=False)
    assert r.returncode == 2 and 'train.nope' in r.stderr

def test_finetune_without_pretraining_names_the_stage(tmp_path):
    r = topocl('finetune', '--preset', 'tiny', '--out-dir', tmp_path, check=False)
    assert r.returncode == 2 and 'stage 1' in r.stderr and 'pretrain-visual' in r.stderr

def test_roi_and_calibrate_on_synthetic(tmp_path):
    env = {'TOPOCL_CACHE': str(tmp_path/'cache')}
    roi = json.loads(topocl('roi', '--dataset', 'synthetic', '--split', 'val', '--quiet', env=env).stdout)
    assert roi['images'] == 400 and roi['fallback'] == 0 and Path(roi['cache']).is_file()
    r = topocl('calibrate', '--dataset', 'synthetic', '--n-images', 24, '--out', tmp_path/'cal.json', env=env)
    assert (tmp_path/'cal.json').is_file() and 'admissible' in r.stdout

def test_export_loads_into_plain_torchvision(tmp_path):
    "`topocl export` of a trained stage-1 backbone: the sidecar's own snippet loads it into torchvision, same features."
    import torch
    from topocl.model import load_checkpoint
    env = {'TOPOCL_CACHE': str(tmp_path/'cache')}
    topocl('pretrain-visual', '--preset', 'tiny', '--epochs', 1, '--out-dir', tmp_path/'run', env=env)
    ck = tmp_path/'run'/'stage1'/'visual.pt'
    out = json.loads(topocl('export', ck, tmp_path/'exp').stdout)
    assert set(out) == {'visual'} and Path(out['visual']['weights']).is_file()
    side = json.loads((tmp_path/'exp'/'visual-resnet18.json').read_text())
    assert side['in_chans'] == 1 and side['stem_changes'] == {'conv1': 'torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)'}
    x = torch.rand(3, 1, 28, 28); torch.save(x, tmp_path/'x.pt')
    code = side['load'] + f"\nnet.eval()\nwith torch.no_grad(): torch.save(net(torch.load({str(tmp_path/'x.pt')!r})), 'y.pt')"
    subprocess.run([sys.executable, '-c', code], cwd=tmp_path/'exp', check=True, timeout=300)   # no topocl import needed
    with torch.no_grad(): ref = load_checkpoint(ck).eval().visual(x)
    assert torch.allclose(torch.load(tmp_path/'exp'/'y.pt'), ref, atol=1e-6)
    r = topocl('export', tmp_path/'nope.pt', tmp_path/'exp2', check=False)
    assert r.returncode == 2 and 'nope.pt' in r.stderr and 'Traceback' not in r.stderr

def test_run_two_seeds_then_probe(tmp_path):
    "`topocl run` on the tiny preset: stages, probes, tables; then `topocl probe` of the saved TopoCL model."
    out = tmp_path/'run'
    env = {'TOPOCL_CACHE': str(tmp_path/'cache')}
    r = topocl('run', '--preset', 'tiny', '--out-dir', out, '--seeds', 0, 1, '--limit', 48, '--probe-epochs', 5,
               '--stage-epochs', '2,1,2', '--variants', 'baseline', 'baseline-matched', 'topocl', 'topocl-visual', env=env)
    assert 'headline (chosen on validation accuracy)' in r.stdout and 'ACC' in r.stdout
    for f in ('results.csv', 'summary.csv', 'comparison.json', 'gates.png'): assert (out/f).is_file(), f
    rows = json.loads((out/'results.json').read_text())
    assert {x['variant'] for x in rows} == {'baseline', 'baseline-matched', 'topocl', 'topocl-visual'}
    assert {x['train_epochs'] for x in rows if x['variant'] == 'baseline-matched'} == {'4'}   # E1 + E3
    assert {x['train_epochs'] for x in rows if x['variant'] == 'topocl'} == {'2+1+2'}
    comp = json.loads((out/'comparison.json').read_text())
    assert {c['metric'] for c in comp} == {'test_acc', 'test_auc'} and all(c['n_pairs'] == 2 for c in comp)
    assert {c['control'] for c in comp} == {'baseline', 'baseline-matched'}
    rec = json.loads(topocl('probe', out/'seed0'/'stage3'/'topocl.pt', '--limit', 48, '--epochs', 5, env=env).stdout)
    assert rec['kind'] == 'fused' and 0 <= rec['test_acc'] <= 1 and set(rec['gate_mean']) >= {'visual', 'topology'}
    assert '\r' not in r.stdout + r.stderr     # piped: no progress bars, one line per epoch

def _files(folder):
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob('*') if p.is_file()}

def test_second_run_into_a_locked_folder_fails_naming_the_holder(tmp_path):
    "While one process holds a run folder, `topocl run` into it fails at once, names the holder and writes nothing."
    out = tmp_path/'run'; (out/'seed0'/'stage1').mkdir(parents=True); (out/'seed0'/'stage1'/'metrics.csv').write_text('epoch,loss\n1,2.0\n')
    code = f"from topocl.lock import FolderLock; import time; FolderLock({str(out)!r}, what='topocl experiment').acquire(); print('held', flush=True); time.sleep(120)"
    holder = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'held'
        before = _files(out)
        r = topocl('run', '--preset', 'tiny', '--out-dir', out, '--seeds', 0, check=False, env={'TOPOCL_CACHE': str(tmp_path/'cache')})
        assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr
        assert f'topocl experiment on host {socket.gethostname()}, pid {holder.pid}' in r.stderr and str(out) in r.stderr
        assert _files(out) == before
    finally: holder.kill(); holder.wait()

def test_papermill_experiment_notebook(tmp_path, monkeypatch):
    "The experiment notebook runs under papermill with tiny parameters and leaves its tables behind."
    import papermill as pm
    nb = Path(__file__).resolve().parents[1]/'nbs'/'experiments'/'run.ipynb'
    out = tmp_path/'exp'
    monkeypatch.setenv('TOPOCL_CACHE', str(tmp_path/'cache'))
    pm.execute_notebook(str(nb), str(tmp_path/'run-out.ipynb'), kernel_name='python3', progress_bar=False,
                        parameters=dict(preset='tiny', epochs=2, seeds=[0, 1], limit=48, probe_epochs=5,
                                        out_dir=str(out), backbone='resnet18'))
    comp = json.loads((out/'comparison.json').read_text())
    assert {c['metric'] for c in comp} == {'test_acc', 'test_auc'}
    assert 'topocl run --preset tiny' in (tmp_path/'run-out.ipynb').read_text()

def test_demo_main_command(tmp_path):
    "The README's main command, shortened (one epoch per stage, 128 training and 64 probe images): every variant, the tables."
    r = topocl('demo', '--epochs', 1, '--n-train', 128, '--limit', 64, '--probe-epochs', 10, '--out-dir', tmp_path/'demo',
               env={'TOPOCL_CACHE': str(tmp_path/'cache')}, timeout=900)
    table = r.stdout
    assert 'baseline-equal-time' in table and 'topocl-no-diagrams' in table and 'ACC' in table and 'AUC' in table
    rows = json.loads((tmp_path/'demo'/'results.json').read_text())
    assert {(x['variant'], x['kind']) for x in rows} == {
        ('baseline', 'visual'), ('baseline-matched', 'visual'), ('baseline-equal-time', 'visual'),
        ('topocl-no-diagrams', 'fused'), ('topocl', 'fused'), ('topocl-visual', 'visual'), ('topocl-topology', 'topology'),
        ('topocl-concat', 'concat'), ('ph-vector', 'ph-vector'), ('ph-vector+baseline', 'ph-vector+visual')}
    assert sum(x['headline'] for x in rows) == 1
    assert all(0 <= x['test_acc'] <= 1 and 0 <= x['test_auc'] <= 1 for x in rows)


@pytest.mark.parametrize('args, msg', [
    (['--stage-epochs', '2,0,2'], 'three positive integers E1,E2,E3'),
    (['--variants', 'topocl', 'visual'], "invalid choice: 'visual'"),
    (['--set', 'augment.weak_band=[0.2, 0.1]'], 'augment.weak_band must be [lo, hi]'),
    (['--preset', 'paper', '--dataset', 'synthetic', '--size', '28'], 'TOPOCL_SAM_CHECKPOINT'),
    (['--stage3', 'best'], "invalid choice: 'best'"),
    (['--set', 'stage3.lr_visual=0'], 'stage3.lr_visual must be None or > 0'),
])
def test_run_refuses_bad_settings_before_training(tmp_path, args, msg):
    "Bad stage budgets, variants, bands or a SAM preset without weights fail at once, naming what is wrong."
    r = topocl('run', '--preset', 'tiny', '--out-dir', tmp_path/'run', *args, check=False,
               env={'TOPOCL_CACHE': str(tmp_path/'cache'), 'TOPOCL_SAM_CHECKPOINT': ''})
    assert r.returncode == 2 and msg in r.stderr, r.stderr
    assert not (tmp_path/'run'/'seed0').exists()


def test_stage3_recipe_from_the_command_line():
    "--stage3 sets every stage-3 field from the named recipe; --set still overrides it."
    from topocl import cli, train
    args = cli.build_parser().parse_args(['run', '--preset', 'tiny', '--stage3', 'authors', '--set', 'stage3.hinge=0.1'])
    cfg = cli.config_from_args(args)
    assert (cfg.stage3.lr_visual, cfg.model.gate_temperature, cfg.stage3.hinge) == (1e-5, 2.0, 0.1)
    paper = cli.config_from_args(cli.build_parser().parse_args(['run', '--preset', 'tiny', '--stage3', 'paper']))
    assert paper.stage3 == train.stage3_recipe(paper, 'paper').stage3 and paper.model.gate_temperature == 1.0
