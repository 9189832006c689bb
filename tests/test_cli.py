"""The `topocl` console command end to end. The installed console command runs as a subprocess, as a user runs it,
in the help test (and in test_sweep's sweeps and test_train's killed run); the commands' work runs in this process
through `topocl.cli.main` (`here`, `here_ok`), since a subprocess costs ~4 s of imports. One tiny two-seed
`topocl run` (`tiny_run`) is shared by the tests that only read it."""
import contextlib, io, json, os, shutil, socket, subprocess, sys
from types import SimpleNamespace
from pathlib import Path
import pytest
from topocl.cli import main

def topocl(*args, cwd=None, env=None, check=True, timeout=600):
    "Run the installed console command; returns the CompletedProcess."
    e = {**os.environ, 'OMP_NUM_THREADS': '1', **(env or {})}
    r = subprocess.run(['topocl', *map(str, args)], capture_output=True, text=True, cwd=cwd, env=e, timeout=timeout)
    if check and r.returncode != 0: raise AssertionError(f'topocl {args} failed ({r.returncode}):\n{r.stderr[-3000:]}')
    return r

def _main(capsys, *args):
    "`topocl ARGS` in this process: (exit status, what it printed)."
    try: rc = main([str(a) for a in args])
    except SystemExit as e: rc = e.code     # argparse's own errors
    return rc, capsys.readouterr()

def here(capsys, *args):
    """`topocl ARGS` in this process: (exit status, stderr). An error that escaped as a traceback would raise here and
    fail the test, so a returned status of 2 is the one-line refusal a user sees."""
    rc, printed = _main(capsys, *args)
    return rc, printed.err

def here_ok(capsys, *args)->str:
    "`topocl ARGS` in this process, which must succeed: its standard output (the work without a second Python start)."
    rc, printed = _main(capsys, *args)
    assert rc == 0, printed.err[-3000:]
    return printed.out

# the two-seed run of `tiny_run`: every stage, 4 variants, stage budgets 2,1,2
RUN = dict(preset='tiny', seeds=[0, 1], limit=48, probe_epochs=5, stage_epochs='2,1,2',
           variants=['baseline', 'baseline-matched', 'topocl', 'topocl-visual'])

@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
    """`topocl run` on the tiny preset (`RUN`) in this process, once per module: (run folder, what it printed, as
    `.out` and `.err`). Read by test_run_two_seeds_then_probe (tables, `topocl probe`),
    test_export_loads_into_plain_torchvision (seed0/stage1/visual.pt) and test_a_moved_run_reuses_its_stages (a copy
    whose stages it reuses)."""
    d = tmp_path_factory.mktemp('tiny-run')
    out, err = io.StringIO(), io.StringIO()
    args = ['run', '--preset', RUN['preset'], '--out-dir', d/'run', '--seeds', *RUN['seeds'], '--limit', RUN['limit'],
            '--probe-epochs', RUN['probe_epochs'], '--stage-epochs', RUN['stage_epochs'], '--variants', *RUN['variants']]
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        mp.setenv('TOPOCL_CACHE', str(d/'cache'))
        rc = main([str(a) for a in args])
    assert rc == 0, err.getvalue()[-3000:]
    return d/'run', SimpleNamespace(out=out.getvalue(), err=err.getvalue())

def test_help_lists_every_command():
    out = topocl('--help').stdout
    for cmd in ('data', 'roi', 'calibrate', 'pretrain-visual', 'pretrain-topo', 'finetune', 'probe', 'export', 'run', 'demo',
                'sweep', 'report', 'screen'):
        assert cmd in out, cmd

def test_data_info_on_real_breastmnist(medmnist_root, capsys):
    info = json.loads(here_ok(capsys, 'data', 'info', '--dataset', 'breastmnist', '--root', medmnist_root))
    assert {s: v['count'] for s, v in info['splits'].items()} == {'train': 546, 'val': 78, 'test': 156}

def test_missing_file_is_one_clear_line(tmp_path, capsys, isolated_env):
    rc, err = here(capsys, 'data', 'info', '--dataset', 'pathmnist', '--root', tmp_path)
    assert rc == 2
    assert 'pathmnist' in err and str(tmp_path) in err and 'Traceback' not in err

def test_bad_config_value_names_the_field(tmp_path, capsys, isolated_env):
    rc, err = here(capsys, 'pretrain-visual', '--preset', 'tiny', '--out-dir', tmp_path, '--lr', '-1')
    assert rc == 2 and 'train.lr' in err and 'Traceback' not in err
    rc, err = here(capsys, 'pretrain-visual', '--preset', 'tiny', '--out-dir', tmp_path, '--set', 'train.nope=1')
    assert rc == 2 and 'train.nope' in err
    rc, err = here(capsys, 'probe', tmp_path/'topocl.pt', '--set', 'train.lr=0.1')   # refused before the file is read
    assert rc == 2 and 'train.lr: not a setting of topocl probe' in err and 'Traceback' not in err

def test_finetune_without_pretraining_names_the_stage(tmp_path, capsys, isolated_env):
    rc, err = here(capsys, 'finetune', '--preset', 'tiny', '--out-dir', tmp_path)
    assert rc == 2 and 'stage 1' in err and 'pretrain-visual' in err

def test_roi_and_calibrate_on_synthetic(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv('TOPOCL_CACHE', str(tmp_path/'cache'))
    roi = json.loads(here_ok(capsys, 'roi', '--dataset', 'synthetic', '--split', 'val', '--quiet'))
    assert roi['images'] == 400 and roi['fallback'] == 0 and Path(roi['cache']).is_file()
    out = here_ok(capsys, 'calibrate', '--dataset', 'synthetic', '--n-images', 24, '--out', tmp_path/'cal.json')
    assert (tmp_path/'cal.json').is_file() and 'admissible' in out

def test_export_loads_into_plain_torchvision(tmp_path, tiny_run, capsys):
    "`topocl export` of a trained stage-1 backbone: the sidecar's own snippet loads it into torchvision, same features."
    import torch
    from topocl.model import load_checkpoint
    ck = tiny_run[0]/'seed0'/'stage1'/'visual.pt'     # read only: the export is written to tmp_path
    out = json.loads(here_ok(capsys, 'export', ck, tmp_path/'exp'))
    assert set(out) == {'visual'} and Path(out['visual']['weights']).is_file()
    side = json.loads((tmp_path/'exp'/'visual-resnet18.json').read_text())
    assert side['in_chans'] == 1 and side['stem_changes'] == {'conv1': 'torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)'}
    x = torch.rand(3, 1, 28, 28); torch.save(x, tmp_path/'x.pt')
    code = side['load'] + f"\nnet.eval()\nwith torch.no_grad(): torch.save(net(torch.load({str(tmp_path/'x.pt')!r})), 'y.pt')"
    subprocess.run([sys.executable, '-c', code], cwd=tmp_path/'exp', check=True, timeout=300)   # no topocl import needed
    with torch.no_grad(): ref = load_checkpoint(ck).eval().visual(x)
    assert torch.allclose(torch.load(tmp_path/'exp'/'y.pt'), ref, atol=1e-6)
    rc, err = here(capsys, 'export', tmp_path/'nope.pt', tmp_path/'exp2')
    assert rc == 2 and 'nope.pt' in err and 'Traceback' not in err

def test_run_two_seeds_then_probe(tmp_path, tiny_run, capsys, monkeypatch):
    "`topocl run` on the tiny preset: stages, probes, tables; then `topocl probe` of the saved TopoCL model."
    out, printed = tiny_run
    monkeypatch.setenv('TOPOCL_CACHE', str(tmp_path/'cache'))   # the probe's ROI and diagram caches: not in the shared run's
    assert 'headline (chosen on validation accuracy)' in printed.out and 'ACC' in printed.out
    for f in ('results.csv', 'summary.csv', 'comparison.json', 'gates.png'): assert (out/f).is_file(), f
    rows = json.loads((out/'results.json').read_text())
    assert {x['variant'] for x in rows} == {'baseline', 'baseline-matched', 'topocl', 'topocl-visual'}
    assert {x['train_epochs'] for x in rows if x['variant'] == 'baseline-matched'} == {'4'}   # E1 + E3
    assert {x['train_epochs'] for x in rows if x['variant'] == 'topocl'} == {'2+1+2'}
    comp = json.loads((out/'comparison.json').read_text())
    assert {c['metric'] for c in comp} == {'test_acc', 'test_auc'} and all(c['n_pairs'] == 2 for c in comp)
    assert {c['control'] for c in comp} == {'baseline', 'baseline-matched'}
    from topocl.config import load_config
    x = load_config(out/'spec.yaml')     # the spec every later step reads, with the flags' values in it
    assert (x.experiment.seeds, x.experiment.probe_limit, x.experiment.probe_epochs, x.stage_epochs) == ([0, 1], 48, 5, [2, 1, 2])
    assert x.experiment.variants == RUN['variants']
    rec = json.loads(here_ok(capsys, 'probe', out/'seed0'/'stage3'/'topocl.pt', '--limit', 48, '--set', 'experiment.probe_epochs=5'))
    assert rec['kind'] == 'fused' and 0 <= rec['test_acc'] <= 1 and set(rec['gate_mean']) >= {'visual', 'topology'}
    assert '\r' not in printed.out + printed.err     # not a terminal: no progress bars, one line per epoch

def _files(folder):
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob('*') if p.is_file()}

def test_second_run_into_a_locked_folder_fails_naming_the_holder(tmp_path, capsys, isolated_env):
    "While one process holds a run folder, `topocl run` into it fails at once, names the holder and writes nothing."
    out = tmp_path/'run'; (out/'seed0'/'stage1').mkdir(parents=True); (out/'seed0'/'stage1'/'metrics.csv').write_text('epoch,loss\n1,2.0\n')
    code = f"from topocl.lock import FolderLock; import time; FolderLock({str(out)!r}, what='topocl experiment').acquire(); print('held', flush=True); time.sleep(120)"
    holder = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'held'
        before = _files(out)
        rc, err = here(capsys, 'run', '--preset', 'tiny', '--out-dir', out, '--seeds', 0)
        assert rc == 2 and 'Traceback' not in err, err
        assert f'topocl experiment on host {socket.gethostname()}, pid {holder.pid}' in err and str(out) in err
        assert _files(out) == before
    finally: holder.kill(); holder.wait()

def test_a_moved_run_reuses_its_stages(tmp_path, monkeypatch, tiny_run, capsys):
    """A copy of `tiny_run`, run from its own spec.yaml with the out_dir moved to the copy, reuses the finished stages
    and probes them again, writing its tables anew. (The experiment notebook runs a spec this way under papermill in
    test_sweep's tiny grid, four runs.)"""
    from topocl.config import load_config, save_config
    from dataclasses import replace
    out = Path(shutil.copytree(tiny_run[0], tmp_path/'exp'))
    (out/'comparison.json').unlink()                     # the run writes it again
    spec = save_config(replace(load_config(out/'spec.yaml'), out_dir=str(out)), out/'spec.yaml')
    monkeypatch.setenv('TOPOCL_CACHE', str(tmp_path/'cache'))
    said = here_ok(capsys, 'run', '--config', spec)
    comp = json.loads((out/'comparison.json').read_text())
    assert {c['metric'] for c in comp} == {'test_acc', 'test_auc'}
    assert 'starting from scratch' not in said and said.count('already complete') == 2 * 4, said   # 2 seeds, 4 runs each

# the tiny preset's widths and calibration images (topocl.config.tiny_config): the demo's own model (ResNet-18 with the
# small-input stem at full width, a 384-wide topology encoder and MoE) took 3/4 of the test's time and its calibration on
# 32 images a quarter of the rest; no assertion below is about either
TINY_PARTS = ['augment.calib_samples=8', 'model.small_input=false', 'model.topo_dim=32', 'model.topo_heads=2',
              'model.topo_out=32', 'model.fusion_dim=32', 'model.expert_dim=32', 'model.hidden=32', 'model.embed_dim=16',
              'model.cross_tokens=4', 'model.fusion_heads=2']

def test_demo_main_command(tmp_path, capsys, monkeypatch):
    """The README's main command, shortened (one epoch per stage, 128 training and 64 probe images, the tiny preset's
    model widths and calibration through `--set`): every variant, the tables."""
    monkeypatch.setenv('TOPOCL_CACHE', str(tmp_path/'cache'))
    table = here_ok(capsys, 'demo', '--epochs', 1, '--n-train', 128, '--limit', 64, '--probe-epochs', 10,
                    '--out-dir', tmp_path/'demo', *[a for kv in TINY_PARTS for a in ('--set', kv)])
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
def test_run_refuses_bad_settings_before_training(tmp_path, args, msg, capsys, isolated_env, monkeypatch):
    "Bad stage budgets, variants, bands or a SAM preset without weights fail at once, naming what is wrong."
    monkeypatch.setenv('TOPOCL_SAM_CHECKPOINT', '')
    rc, err = here(capsys, 'run', '--preset', 'tiny', '--out-dir', tmp_path/'run', *args)
    assert rc == 2 and msg in err, err
    assert not (tmp_path/'run'/'seed0').exists()


def test_stage3_recipe_from_the_command_line():
    "--stage3 sets every stage-3 field from the named recipe; --set still overrides it."
    from topocl import cli, train
    args = cli.build_parser().parse_args(['run', '--preset', 'tiny', '--stage3', 'authors', '--set', 'stage3.hinge=0.1'])
    cfg = cli.config_from_args(args)
    assert (cfg.stage3.lr_visual, cfg.model.gate_temperature, cfg.stage3.hinge) == (1e-5, 2.0, 0.1)
    paper = cli.config_from_args(cli.build_parser().parse_args(['run', '--preset', 'tiny', '--stage3', 'paper']))
    assert paper.stage3 == train.stage3_recipe(paper, 'paper').stage3 and paper.model.gate_temperature == 1.0

def test_calibrate_settings_are_fields_of_the_spec(tmp_path, capsys, isolated_env):
    "`topocl calibrate`'s flags and `--set` resolve as a run's spec does: a bad value is named before any image is read."
    from topocl.cli import build_parser, calibration_spec
    args = build_parser().parse_args(['calibrate', '--dataset', 'breastmnist', '--size', '64', '--weak-band', '0.02,0.1',
                                      '--set', 'persistence.scales=[1.0,0.5]', '--set', 'roi.options.checkpoint=w.pth'])
    s = calibration_spec(args)
    assert (s.data.name, s.data.size, s.augment.weak_band, s.persistence.scales) == ('breastmnist', 64, [0.02, 0.1], [1.0, 0.5])
    assert s.roi.options == {'checkpoint': 'w.pth'}
    rc, err = here(capsys, 'calibrate', '--dataset', 'synthetic', '--out', tmp_path/'c.json', '--set', 'persistence.k0=0')
    assert rc == 2 and 'persistence.k0: expected a positive int, got 0' in err and not (tmp_path/'c.json').exists()
    rc, err = here(capsys, 'calibrate', '--dataset', 'synthetic', '--out', tmp_path/'c.json', '--set', 'persistence.k9=1')
    assert rc == 2 and 'unknown config field persistence.k9' in err

def test_dry_run_writes_the_spec_that_a_run_reads(tmp_path, capsys, isolated_env):
    "`topocl run --dry-run` resolves and writes spec.yaml, trains nothing; `--config spec.yaml` resolves to the same spec."
    from topocl.cli import build_parser, config_from_args
    from topocl.config import load_config
    rc = main(['run', '--preset', 'tiny', '--out-dir', str(tmp_path/'r'), '--dataset', 'breastmnist', '--seeds', '3', '4',
               '--set', 'train.lr=0.01', '--dry-run'])
    out = capsys.readouterr().out
    assert rc == 0 and sorted(p.name for p in (tmp_path/'r').iterdir()) == ['spec.yaml'] and 'lr: 0.01' in out
    spec = load_config(tmp_path/'r'/'spec.yaml')
    assert (spec.data.name, spec.train.lr, spec.experiment.seeds, spec.data.options) == ('breastmnist', 0.01, [3, 4], {})
    assert config_from_args(build_parser().parse_args(['run', '--config', str(tmp_path/'r'/'spec.yaml')])) == spec
