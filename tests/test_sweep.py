"""`topocl sweep` and `topocl report` end to end on CPU: a tiny grid through the local executor and through
submitit's local executor, reruns that skip, a killed run that resumes, a time limit that requeues.
The tiny grid is trained once per module (`tiny_grid`); the tests that add to it work on a copy."""
import json, os, shutil, signal, subprocess, time
from pathlib import Path
import pandas as pd
from topocl.config import load_config
import pytest
from topocl import sweep as S
from topocl.cli import main

# two methods x two seeds, the tiny preset, the baseline and TopoCL, short probes
TINY = dict(name='tiny', preset='tiny', datasets=['synthetic'], methods=['simclr', 'byol'], seeds=[0, 1],
            variants=['baseline', 'topocl'], probe_epochs=5, limit=60, overrides=['tensorboard=false', 'stage_epochs=[1,1,1]'])

def topocl(*args, env=None, check=True, timeout=900, **kw):
    e = {**os.environ, 'OMP_NUM_THREADS': '1', **(env or {})}
    r = subprocess.run(['topocl', *map(str, args)], capture_output=True, text=True, env=e, timeout=timeout, **kw)
    if check and r.returncode != 0: raise AssertionError(f'topocl {args} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}')
    return r

def grid_file(tmp_path, **changes):
    import yaml
    p = tmp_path/'grid.yaml'; p.write_text(yaml.safe_dump({**TINY, **changes})); return p

def here(capsys, *args):
    """`topocl ARGS` in this process (a subprocess costs ~4 s of imports): exit status, stdout, stderr. An error that
    escaped as a traceback would raise here and fail the test; the console command itself runs as a subprocess in the
    tiny grid and the killed run below."""
    try: rc = main([str(a) for a in args])
    except SystemExit as e: rc = e.code     # argparse's own errors
    out = capsys.readouterr()
    return rc, out.out, out.err

@pytest.fixture
def cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv('TOPOCL_CACHE', str(tmp_path/'cache'))
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    return {'TOPOCL_CACHE': str(tmp_path/'cache')}

@pytest.fixture(scope='module')
def tiny_grid(tmp_path_factory):
    """The tiny grid (TINY: 2 methods x 2 seeds) run once through the console command, papermill runner, two runs
    at once: (results folder, the command's stdout). Read by test_tiny_grid_local_rerun_skips_and_report,
    test_report_lists_missing_runs and test_submitit_local_executor_runs_the_array, each on its own copy."""
    d = tmp_path_factory.mktemp('tiny-grid')
    r = topocl('sweep', grid_file(d), '--results', d/'res', '--jobs', 2, env={'TOPOCL_CACHE': str(d/'cache')})
    return d/'res', r.stdout

def copy_of(results, tmp_path):
    "A private copy of a shared results folder, for a test that writes into it."
    return Path(shutil.copytree(results, tmp_path/'res'))


def test_slurm_dry_run_prints_the_job_array(tmp_path, capsys):
    rc, out, err = here(capsys, 'sweep', 'table3', '--results', tmp_path/'res', '--executor', 'slurm', '--dry-run',
                        '--partition', 'gpu', '--gpus-per-node', 2, '--time-min', 600, '--array-parallelism', 8)
    assert rc == 0, err
    assert 'grid table3: 125 run(s), 0 done, 125 to run' in out
    for line in ('#SBATCH --array=0-124%8', '#SBATCH --partition=gpu', '#SBATCH --gpus-per-node=2', '#SBATCH --time=600',
                 '#SBATCH --signal=USR2@90', 'submitit.core._submit'):
        assert line in out, line
    assert not (tmp_path/'res').exists()   # a dry run writes nothing

def test_bad_grid_file_names_file_and_field(tmp_path, capsys):
    p = tmp_path/'g.yaml'; p.write_text('datasets: [synthetic]\nmethods: [simclr, swav]\nseeds: [0]\n')
    rc, _, err = here(capsys, 'sweep', p, '--results', tmp_path/'res')
    assert rc == 2 and 'g.yaml' in err and 'methods' in err and 'swav' in err
    rc, _, err = here(capsys, 'report', tmp_path/'nowhere')
    assert rc == 2 and 'manifest' in err
    # a bad value is refused when the grid expands, even in a dry run, before anything is written or submitted
    rc, _, err = here(capsys, 'sweep', grid_file(tmp_path, overrides=['train.lr=-1']), '--results', tmp_path/'res', '--dry-run')
    assert rc == 2 and 'train.lr must be > 0' in err and "setting 'default'" in err, err
    assert not (tmp_path/'res').exists()

def test_tiny_grid_local_rerun_skips_and_report(tmp_path, cache_env, tiny_grid, capsys):
    "The tiny grid through papermill, two runs at once; a rerun skips all four; the report's tables have p-values and the tally."
    done, stdout = tiny_grid
    assert 'runs in' in stdout and '4 done' in stdout, stdout
    res = copy_of(done, tmp_path)
    man = pd.read_csv(res/'manifest.csv')
    assert len(man) == 4 and set(man.method) == {'simclr', 'byol'} and set(man.seed) == {0, 1}
    for rid in man.id:
        assert (res/'runs'/rid/'run.ipynb').is_file()           # the executed notebook is the record
        spec = res/'runs'/rid/'spec.yaml'                         # the run's one parameter, resolved at expansion
        assert 'topocl run --config ' in (text := (res/'runs'/rid/'run.ipynb').read_text()) and f'runs/{rid}/spec.yaml' in text
        assert load_config(spec).experiment.seeds == [int(man.seed[man.id == rid].iloc[0])]
    stamps = {rid: (res/'runs'/rid/'done.json').read_text() for rid in man.id}
    rc, said, err = here(capsys, 'sweep', grid_file(tmp_path), '--results', res)   # nothing to run: in this process
    assert rc == 0 and '4 done, 0 to run' in said, said + err
    assert stamps == {rid: (res/'runs'/rid/'done.json').read_text() for rid in man.id}

    rc, said, err = here(capsys, 'report', res)                   # its report notebook runs under papermill
    assert rc == 0, err
    rep = json.loads(said)
    assert rep['missing'] == [] and (res/'report'/'report.ipynb').is_file()
    out = res/'report'
    t3 = pd.read_csv(out/'tiny.csv')
    assert t3.row.tolist() == ['baseline', '+TopoCL'] * 2 and {'synthetic ACC', 'synthetic AUC', 'Avg ACC'} <= set(t3.columns)
    tests = pd.read_csv(out/'tiny-tests.csv')
    assert len(tests) == 4 and (tests.n_pairs == 2).all() and tests.p.between(0, 1).all()
    tally = pd.read_csv(out/'tiny-tally.csv')
    assert tally.comparisons.tolist() == ['dataset-metric', 'dataset-averaged'] and tally.n.tolist() == [4, 4]
    costs = pd.read_csv(out/'tiny-costs.csv')
    assert (costs.params_M > 0).all() and (costs.GFLOPs > 0).all() and (costs.img_per_s > 0).all()
    assert costs.loc[1, 'params_M'] > costs.loc[0, 'params_M']      # TopoCL adds the topology encoder and fusion
    for ext in ('md', 'tex', 'csv'): assert (out/f'tiny.{ext}').is_file()
    assert (out/'tiny-gates-simclr.png').is_file() and '+TopoCL' in (out/'report.md').read_text()

def test_report_lists_missing_runs(tmp_path, cache_env, tiny_grid, capsys):
    "A grid grown by one seed: the report lists the runs not done and its tables use the finished ones."
    res = copy_of(tiny_grid[0], tmp_path)                           # the four runs of TINY, done
    more = S.Grid(**{**TINY, 'seeds': [0, 1, 2]})                   # + seed 2 of both methods
    S.sweep(more, res, dry_run=True, say=lambda s: None)           # a dry run does not add to the manifest
    assert len(S.load_manifest(res)) == 4
    S.save_manifest(S.expand(more), res)
    rc, out, err = here(capsys, 'report', res, '--no-notebook')
    assert rc == 0, err
    rep = json.loads(out)
    assert len(rep['missing']) == 2
    assert pd.read_csv(res/'report'/'missing.csv').status.tolist() == ['pending', 'pending']
    assert (pd.read_csv(res/'report'/'tiny-tests.csv').n_pairs == 2).all()   # the finished seeds 0 and 1

def test_submitit_local_executor_runs_the_array(tmp_path, cache_env, tiny_grid):
    """The tiny grid as a submitit job array on this machine: only the runs not done are submitted (here byol's two,
    their folders removed), and the array's results are the local executor's (`tiny_grid`, papermill runner)."""
    res = copy_of(tiny_grid[0], tmp_path)
    man = S.load_manifest(res)
    redo = man[man.method == 'byol'].id.tolist()
    assert len(redo) == 2
    for rid in redo: shutil.rmtree(res/'runs'/rid)
    m = S.sweep(S.Grid(**TINY), res, executor='submitit-local', runner='python', say=lambda s: None)
    assert set(m.status) == {'done'} and len(m) == 4
    assert len(list((res/'submitit').glob('*_result.pkl'))) == 2
    for rid in redo:
        a, b = (pd.read_csv(d/'runs'/rid/'results.csv') for d in (res, tiny_grid[0]))
        assert len(a) and a.test_acc.tolist() == b.test_acc.tolist()   # the run id names the same computation

def test_a_killed_run_resumes(tmp_path, cache_env):
    "SIGKILL the sweep (and its run) during stage 1; of two reruns started at once, one continues the stage from its checkpoint, the other skips it."
    g = grid_file(tmp_path, methods=['simclr'], seeds=[0], variants=['baseline'], overrides=['train.epochs=6', 'tensorboard=false'])
    env = {**os.environ, 'OMP_NUM_THREADS': '1', **cache_env}
    p = subprocess.Popen(['topocl', 'sweep', str(g), '--results', str(tmp_path/'res'), '--runner', 'python'], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    rid = S.expand(S.load_grid(g)).id[0]
    ck = tmp_path/'res'/'runs'/rid/'seed0'/'stage1'/'checkpoint.pt'
    t0 = time.time()
    while not ck.exists() and time.time() - t0 < 300: time.sleep(0.1)
    os.killpg(p.pid, signal.SIGKILL); p.wait(timeout=60)
    time.sleep(1)
    row = S.load_manifest(tmp_path/'res').iloc[0].to_dict()
    assert S.run_status(tmp_path/'res', row) == 'started'
    # the killed holders' locks are taken over; the rerun is started twice at once and only one of the two trains
    two = [subprocess.Popen(['topocl', 'sweep', str(g), '--results', str(tmp_path/'res'), '--runner', 'python'], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in two]
    assert [p.returncode for p in two] == [0, 0], outs
    said = ''.join(o + e for o, e in outs)
    assert said.count(f'skipped {rid}: another process runs it (topocl sweep, run {rid} on host') == 1, said
    assert S.run_status(tmp_path/'res', row) == 'done'
    log = (tmp_path/'res'/'runs'/rid/'log.txt').read_text()
    assert log.count(f'run {rid} (') == 2 and 'resuming from' in log     # two attempts, the second resumed

@pytest.mark.slow
def test_a_time_limit_requeues_and_continues(tmp_path, cache_env):
    "submitit's local executor signals the time limit (USR2); the task is requeued and the run resumes from its checkpoint."
    g = S.Grid(**{**TINY, 'methods': ['simclr'], 'seeds': [0], 'variants': ['baseline'],
                  'overrides': ['train.epochs=40', 'data.options.n=128', 'tensorboard=false']})   # stage 1: about a minute
    row = S.expand(g).iloc[0].to_dict()
    S.save_manifest(S.expand(g), tmp_path)
    import submitit
    ex = submitit.LocalExecutor(tmp_path/'submitit')
    ex.update_parameters(timeout_min=1, signal_delay_s=20)    # the signal comes 40 s in, during stage 1
    job = ex.submit(S.SweepTask(tmp_path, 'python'), row)
    rec = job.result()
    assert rec['id'] == row['id'] and S.run_status(tmp_path, row) == 'done'
    assert 'Requeued' in job.stderr() + job.stdout()
    log = (tmp_path/'runs'/row['id']/'log.txt').read_text()
    assert log.count(f"run {row['id']} (") >= 2 and 'resuming from' in log

def test_ablation_without_pretraining_trains_stage_3_only(tmp_path, cache_env):
    "Table 5's 'w/o pretraining' row: stage 3 from random encoders; stages 1 and 2 are neither trained nor counted."
    from topocl import pipeline as P, train as T
    from topocl.probe import LinearProbeConfig
    cfg = T.apply_overrides(T.tiny_config(tmp_path), {'visual_ckpt': 'scratch', 'topology_ckpt': 'scratch', 'tensorboard': False})
    recs = P.run_seed(cfg, 0, tmp_path, variants=['topocl'], probe=LinearProbeConfig(epochs=2), cache_dir=tmp_path/'cache',
                      splits=P.load_splits('synthetic', None, 28, 40))
    assert [r['train_epochs'] for r in recs] == ['2']
    assert not (tmp_path/'seed0'/'stage1').exists() and not (tmp_path/'seed0'/'stage2').exists()
    only_visual = T.apply_overrides(cfg, {'topology_ckpt': None})
    assert P._runs_needed(['topocl'], only_visual) == {'stage2', 'stage3'}
    assert P._runs_needed(['baseline', 'topocl'], cfg) == {'stage1', 'stage3'}   # the baseline probes stage 1
