"""`topocl sweep` and `topocl report` end to end on CPU: a tiny grid through the local executor and through
submitit's local executor, reruns that skip, a killed run that resumes, a time limit that requeues."""
import json, os, signal, subprocess, time
from pathlib import Path
import pandas as pd
import pytest
from topocl import sweep as S

# two methods x two seeds, the tiny preset, the baseline and TopoCL, short probes
TINY = dict(name='tiny', preset='tiny', datasets=['synthetic'], methods=['simclr', 'byol'], seeds=[0, 1],
            variants=['baseline', 'topocl'], probe_epochs=5, limit=60, overrides=['tensorboard=false'])

def topocl(*args, env=None, check=True, timeout=900, **kw):
    e = {**os.environ, 'OMP_NUM_THREADS': '1', **(env or {})}
    r = subprocess.run(['topocl', *map(str, args)], capture_output=True, text=True, env=e, timeout=timeout, **kw)
    if check and r.returncode != 0: raise AssertionError(f'topocl {args} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}')
    return r

def grid_file(tmp_path, **changes):
    import yaml
    p = tmp_path/'grid.yaml'; p.write_text(yaml.safe_dump({**TINY, **changes})); return p

@pytest.fixture
def cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv('TOPOCL_CACHE', str(tmp_path/'cache'))
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    return {'TOPOCL_CACHE': str(tmp_path/'cache')}


def test_slurm_dry_run_prints_the_job_array(tmp_path):
    r = topocl('sweep', 'table3', '--results', tmp_path/'res', '--executor', 'slurm', '--dry-run',
               '--partition', 'gpu', '--gpus-per-node', 2, '--time-min', 600, '--array-parallelism', 8)
    assert 'grid table3: 125 run(s), 0 done, 125 to run' in r.stdout
    for line in ('#SBATCH --array=0-124%8', '#SBATCH --partition=gpu', '#SBATCH --gpus-per-node=2', '#SBATCH --time=600',
                 '#SBATCH --signal=USR2@90', 'submitit.core._submit'):
        assert line in r.stdout, line
    assert not (tmp_path/'res').exists()   # a dry run writes nothing

def test_bad_grid_file_names_file_and_field(tmp_path):
    p = tmp_path/'g.yaml'; p.write_text('datasets: [synthetic]\nmethods: [simclr, swav]\nseeds: [0]\n')
    r = topocl('sweep', p, '--results', tmp_path/'res', check=False)
    assert r.returncode == 2 and 'g.yaml' in r.stderr and 'methods' in r.stderr and 'swav' in r.stderr
    r = topocl('report', tmp_path/'nowhere', check=False)
    assert r.returncode == 2 and 'manifest' in r.stderr
    # a bad value is refused when the grid expands, even in a dry run, before anything is written or submitted
    r = topocl('sweep', grid_file(tmp_path, overrides=['train.lr=-1']), '--results', tmp_path/'res', '--dry-run', check=False)
    assert r.returncode == 2 and 'train.lr must be > 0' in r.stderr and "setting 'default'" in r.stderr, r.stderr
    assert not (tmp_path/'res').exists()

def test_tiny_grid_local_rerun_skips_and_report(tmp_path, cache_env):
    "The tiny grid through papermill, two runs at once; a rerun skips all four; the report's tables have p-values and the tally."
    res = tmp_path/'res'
    r = topocl('sweep', grid_file(tmp_path), '--results', res, '--jobs', 2, env=cache_env)
    assert 'runs in' in r.stdout and '4 done' in r.stdout, r.stdout
    man = pd.read_csv(res/'manifest.csv')
    assert len(man) == 4 and set(man.method) == {'simclr', 'byol'} and set(man.seed) == {0, 1}
    for rid in man.id:
        assert (res/'runs'/rid/'run.ipynb').is_file()           # the executed notebook is the record
        assert 'topocl run --preset tiny' in (res/'runs'/rid/'run.ipynb').read_text()
    stamps = {rid: (res/'runs'/rid/'done.json').read_text() for rid in man.id}
    again = topocl('sweep', grid_file(tmp_path), '--results', res, env=cache_env)
    assert '4 done, 0 to run' in again.stdout
    assert stamps == {rid: (res/'runs'/rid/'done.json').read_text() for rid in man.id}

    rep = json.loads(topocl('report', res, env=cache_env).stdout)
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

def test_report_lists_missing_runs(tmp_path, cache_env):
    "A grid grown by one seed: the report lists the run not done and its tables use the finished ones."
    res = tmp_path/'res'
    S.sweep(S.Grid(**{**TINY, 'methods': ['simclr'], 'seeds': [0], 'variants': ['baseline']}), res, runner='python', say=lambda s: None)
    more = S.Grid(**{**TINY, 'methods': ['simclr'], 'seeds': [0, 1], 'variants': ['baseline']})
    S.sweep(more, res, dry_run=True, say=lambda s: None)           # a dry run does not add to the manifest
    assert len(S.load_manifest(res)) == 1
    S.save_manifest(S.expand(more), res)
    rep = json.loads(topocl('report', res, '--no-notebook', env=cache_env).stdout)
    assert len(rep['missing']) == 1
    assert pd.read_csv(res/'report'/'missing.csv').status.tolist() == ['pending']

def test_submitit_local_executor_runs_the_array(tmp_path, cache_env):
    "The same tiny grid as a submitit job array on this machine; the array's results are the local executor's."
    m = S.sweep(S.Grid(**TINY), tmp_path/'res', executor='submitit-local', runner='python', say=lambda s: None)
    assert set(m.status) == {'done'} and len(m) == 4
    assert len(list((tmp_path/'res'/'submitit').glob('*_result.pkl'))) == 4
    one = S.Grid(**{**TINY, 'methods': ['byol'], 'seeds': [1]})
    local = S.sweep(one, tmp_path/'local', runner='python', say=lambda s: None)
    a, b = (pd.read_csv(d/'runs'/local.id[0]/'results.csv') for d in (tmp_path/'res', tmp_path/'local'))
    assert a.test_acc.tolist() == b.test_acc.tolist()             # the run id names the same computation

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
                  'overrides': ['train.epochs=12', 'data.options.n=64', 'tensorboard=false']})
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
    cfg = T.apply_overrides(T.tiny_config(tmp_path), {'visual_ckpt': 'scratch', 'topology_ckpt': 'scratch', 'tensorboard': False})
    recs = P.run_seed(cfg, 0, tmp_path, variants=['topocl'], probe_kw=dict(epochs=2), cache_dir=tmp_path/'cache',
                      splits=P.load_splits('synthetic', None, 28, 40))
    assert [r['train_epochs'] for r in recs] == ['2']
    assert not (tmp_path/'seed0'/'stage1').exists() and not (tmp_path/'seed0'/'stage2').exists()
    only_visual = T.apply_overrides(cfg, {'topology_ckpt': None})
    assert P._runs_needed(['topocl'], only_visual) == {'stage2', 'stage3'}
    assert P._runs_needed(['baseline', 'topocl'], cfg) == {'stage1', 'stage3'}   # the baseline probes stage 1
