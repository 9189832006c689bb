"""Integration tests of topocl.train: config validation, exact resume, NaN handling, stage order, DDP on gloo."""
import csv, dataclasses, json, os, subprocess, sys, textwrap

import numpy as np
import pytest
import torch

from topocl import train as T



@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv('TOPOCL_CACHE', str(tmp_path / 'cache'))  # ROI caches stay inside the test
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a small shared CPU: more threads only thrash
    yield
    torch.set_num_threads(n)


def _states_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        if torch.is_tensor(a[k]): assert torch.equal(a[k], b[k]), k
        else: assert a[k] == b[k], k


def _ckpt(res):
    return torch.load(res.dir / 'checkpoint.pt', map_location='cpu', weights_only=False)


# ---------------------------------------------------------------- config
def test_bad_values_name_their_field(tmp_path):
    cfg = T.tiny_config(tmp_path / 'run')
    with pytest.raises(ValueError, match=r"train\.lr must be > 0, got -1"):
        T.validate_config(T.apply_overrides(cfg, {'train.lr': -1}))
    bad = T.apply_overrides(cfg, ['train.epochs=0', 'train.batch_size=1', 'data.split=test', 'roi.extractor=edges',
                                  'method.name=swav', 'num_workers=-2', 'augment.view2=visual'])
    with pytest.raises(ValueError) as e: T.validate_config(bad)
    for field in ('train.epochs', 'train.batch_size', 'data.split', 'roi.extractor', 'method.name', 'num_workers',
                  'augment.view2'):
        assert field in str(e.value), field
    with pytest.raises(ValueError, match=r"method\.params\.tau is not a simclr hyperparameter"):
        T.validate_config(T.apply_overrides(cfg, {'method.params.tau': 0.1}))
    with pytest.raises(ValueError, match=r"model\.arch"):
        T.apply_overrides(cfg, {'model.arch': 'vgg11'})
    with pytest.raises(ValueError, match=r"unknown config field train\.lrr"):
        T.apply_overrides(cfg, {'train.lrr': 1.0})
    with pytest.raises(ValueError, match=r"train\.epochs must be an integer"):
        T.apply_overrides(cfg, {'train.epochs': 'many'})
    # the trainer refuses before touching anything on disk
    with pytest.raises(ValueError, match=r"train\.lr must be > 0"):
        T.train_stage(1, cfg, {'train.lr': -1.0})
    assert not (tmp_path / 'run').exists()


def test_config_files(tmp_path):
    cfg = T.apply_overrides(T.tiny_config(tmp_path / 'run'), ['train.lr=3e-4', 'method.params.temperature=0.2'])
    assert cfg.train.lr == 3e-4 and cfg.method.params['temperature'] == 0.2
    p = T.save_config(cfg, tmp_path / 'c.yaml')
    assert T.load_config(p) == cfg
    (tmp_path / 'partial.yaml').write_text('train:\n  lr: 1e-3\n  epochs: 3\n')   # YAML 1.1 reads 1e-3 as a string
    c = T.load_config(tmp_path / 'partial.yaml')
    assert c.train.lr == 1e-3 and c.train.epochs == 3 and c.data == T.DataConfig()
    (tmp_path / 'typo.yaml').write_text('train:\n  learning_rate: 0.1\n')
    with pytest.raises(ValueError, match=r"typo\.yaml.*unknown config field train\.learning_rate"):
        T.load_config(tmp_path / 'typo.yaml')
    (tmp_path / 'list.yaml').write_text('- 1\n- 2\n')
    with pytest.raises(ValueError, match='must hold a mapping'): T.load_config(tmp_path / 'list.yaml')
    with pytest.raises(FileNotFoundError, match='nope.yaml'): T.load_config(tmp_path / 'nope.yaml')


# ---------------------------------------------------------------- resume
@pytest.mark.parametrize('stage,method,workers', [(1, 'simclr', 0), (2, 'byol', 2)])
def test_resume_reaches_the_same_weights(tmp_path, stage, method, workers):
    "2 epochs in one go == 1 epoch, stop, resume to 2 (the resumed run also uses DataLoader workers)."
    keep = lambda cfg: dataclasses.replace(cfg, keep_checkpoints=True)   # compare the whole resume state at the end
    a = T.train_stage(stage, keep(T.tiny_config(tmp_path / 'a', method=method, num_workers=0)))
    b_cfg = keep(T.tiny_config(tmp_path / 'b', method=method, num_workers=workers))
    part = T.train_stage(stage, b_cfg, max_epochs=1)
    assert not part.complete and part.weights is None and _ckpt(part)['epoch'] == 1
    b = T.train_stage(stage, b_cfg, resume=True)
    assert b.complete and b.epochs_done == 2
    ca, cb = _ckpt(a), _ckpt(b)
    _states_equal(ca['method'], cb['method'])          # encoder, heads, momentum target
    _states_equal(ca['optimizer']['state'][0], cb['optimizer']['state'][0])
    assert ca['scheduler'] == cb['scheduler']
    assert [r['loss'] for r in ca['metrics']] == [r['loss'] for r in cb['metrics']]
    # the saved weights load back through topocl.model
    from topocl.model import load_checkpoint
    m = load_checkpoint(b.weights)
    assert m.config.kind == T.STAGE_KINDS[stage]
    rows = list(csv.DictReader(open(b.dir / 'metrics.csv')))
    assert [int(r['epoch']) for r in rows] == [1, 2] and set(rows[0]) == set(T.METRIC_COLUMNS)
    assert T.load_config(b.dir / 'config.yaml').train == b_cfg.train
    # a finished stage is not trained again
    again = T.train_stage(stage, b_cfg, resume=True)
    assert again.complete and os.path.getmtime(b.weights) == os.path.getmtime(again.weights)


def test_resume_is_exact_with_the_monitor_on(tmp_path):
    "Stage 2 with the kNN monitor and TensorBoard every epoch: resumed == uninterrupted, kNN accuracies included."
    over = {'monitor.every': 1, 'train.epochs': 3, 'keep_checkpoints': True}
    a = T.train_stage(2, T.tiny_config(tmp_path / 'a'), over)
    b_cfg = T.apply_overrides(T.tiny_config(tmp_path / 'b'), over)
    T.train_stage(2, b_cfg, max_epochs=1)
    b = T.train_stage(2, b_cfg, resume=True)
    _states_equal(_ckpt(a)['method'], _ckpt(b)['method'])
    assert [(r['loss'], r['knn_acc']) for r in a.metrics] == [(r['loss'], r['knn_acc']) for r in b.metrics]
    assert all(0 <= r['knn_acc'] <= 1 for r in a.metrics)
    assert len(list((b.dir / 'tensorboard').iterdir())) == 2    # one event file per call
    off = T.train_stage(2, T.tiny_config(tmp_path / 'c'), {'train.epochs': 3})
    assert [r['loss'] for r in off.metrics] == [r['loss'] for r in a.metrics]   # the monitor changes no number


def test_monitor_adds_gate_means_in_stage_3_and_is_off_without_labels(tmp_path, capsys):
    cfg = T.apply_overrides(T.tiny_config(tmp_path / 'g', epochs=1), {'monitor.every': 1})
    for s in (1, 2): T.train_stage(s, cfg)
    r3 = T.train_stage(3, cfg)
    gates = {k: v for k, v in r3.metrics[0].items() if k.startswith('gate_')}
    from topocl.moe import EXPERTS
    assert set(gates) == {f'gate_{e}' for e in EXPERTS} and abs(sum(gates.values()) - 1) < 1e-4
    from topocl.callbacks import KNNMonitor
    from types import SimpleNamespace
    import topocl.callbacks as C
    mon = KNNMonitor(1)
    orig = C.load_dataset
    C.load_dataset = lambda *a, **k: (orig(*a, **k)[0], None)     # a data set without labels
    try:
        logs = []
        mon.on_fit_start(SimpleNamespace(is_main=True, cfg=cfg, log=logs.append))   # the `TrainState` fields it reads
    finally: C.load_dataset = orig
    assert mon.data is None and logs == ['kNN monitor off: synthetic has no labels (or several per image)']


def test_a_run_killed_mid_epoch_resumes(tmp_path):
    "SIGKILL during epoch 2 of `topocl pretrain-visual`; `--resume` continues from epoch 1 and ends where an uninterrupted run ends."
    import signal, time
    env = {**os.environ, 'TOPOCL_CACHE': str(tmp_path / 'cache'), 'OMP_NUM_THREADS': '1'}
    args = ['topocl', 'pretrain-visual', '--preset', 'tiny', '--epochs', '3', '--set', 'data.options.n=96', '--set', 'tensorboard=false',
            '--set', 'keep_checkpoints=true']
    # the uninterrupted run goes alongside the one to be killed (one thread each, two cores), with its own cache
    full = subprocess.Popen(args + ['--out-dir', str(tmp_path / 'full')], env={**env, 'TOPOCL_CACHE': str(tmp_path / 'cache-full')},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    p = subprocess.Popen(args + ['--out-dir', str(tmp_path / 'k')], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ck = tmp_path / 'k' / 'stage1' / 'checkpoint.pt'
    t0 = time.time()
    while not ck.exists() and time.time() - t0 < 300: time.sleep(0.05)
    time.sleep(0.3)                                                 # into epoch 2
    p.send_signal(signal.SIGKILL); p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL and not (tmp_path / 'k' / 'stage1' / 'visual.pt').exists()
    assert torch.load(ck, weights_only=True)['epoch'] in (1, 2)     # killed during epoch 2 (or 3 on a fast machine)
    r = subprocess.run(args + ['--out-dir', str(tmp_path / 'k'), '--resume'], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and 'resuming from' in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    _, err = full.communicate(timeout=600)
    assert full.returncode == 0, err[-2000:]
    a, b = (torch.load(tmp_path / d / 'stage1' / 'checkpoint.pt', weights_only=True) for d in ('full', 'k'))
    _states_equal(a['method'], b['method'])
    assert [m['loss'] for m in a['metrics']] == [m['loss'] for m in b['metrics']]

def test_a_finished_stage_keeps_a_small_record_unless_asked(tmp_path):
    "The resume state of a finished stage is replaced by a record of its epochs, metrics and config: still complete on resume."
    res = T.train_stage(1, T.tiny_config(tmp_path / 'p'))
    ck = _ckpt(res)
    assert set(ck) == {'stage', 'epoch', 'metrics', 'config', 'world_size'} and ck['epoch'] == 2
    assert (res.dir / 'checkpoint.pt').stat().st_size < res.weights.stat().st_size / 20
    again = T.train_stage(1, T.tiny_config(tmp_path / 'p'), resume=True)
    assert again.complete and again.metrics == res.metrics and os.path.getmtime(again.weights) == os.path.getmtime(res.weights)
    with pytest.raises(ValueError, match=r'train\.epochs'):   # more epochs: a changed config, refused as before
        T.train_stage(1, T.tiny_config(tmp_path / 'p', epochs=3), resume=True)
    kept = T.train_stage(1, dataclasses.replace(T.tiny_config(tmp_path / 'k'), keep_checkpoints=True))
    assert {'method', 'optimizer', 'rng'} <= set(_ckpt(kept))

def test_resume_refuses_a_changed_config(tmp_path):
    cfg = T.tiny_config(tmp_path / 'r', epochs=2)
    T.train_stage(1, cfg, max_epochs=1)
    with pytest.raises(ValueError, match=r"config changed in .*train\.lr"):
        T.train_stage(1, cfg, {'train.lr': 0.5}, resume=True)
    T.train_stage(1, cfg, {'num_workers': 1}, resume=True)   # workers may change



def test_backend_changes_no_number_and_the_run_records_its_persistence(tmp_path):
    "Stage 2 on GUDHI's 2-D path and on cripser: the same losses (identical diagrams); the weights carry the config."
    runs = {}
    for be in ('gudhi-2d', 'cripser'):
        cfg = T.apply_overrides(T.tiny_config(tmp_path / be, epochs=1), {'persistence.backend': be})
        runs[be] = T.train_stage(2, cfg)
    assert [m['loss'] for m in runs['gudhi-2d'].metrics] == [m['loss'] for m in runs['cripser'].metrics]
    from topocl.model import load_checkpoint
    _, extra = load_checkpoint(runs['cripser'].weights, return_extra=True)
    assert extra['persistence'] == dict(filtration='sublevel', backend='cripser', k0=48, k1=96, scales=None, normaliser='roi')
    assert extra['roi'] == 'otsu'
    cal = json.loads((tmp_path / 'cripser' / 'calibration.json').read_text())
    assert cal['meta']['persistence']['backend'] == 'cripser'
    assert cal['entries'] == json.loads((tmp_path / 'gudhi-2d' / 'calibration.json').read_text())['entries']


def test_resume_of_a_run_from_before_the_persistence_section(tmp_path):
    "A checkpoint whose config has augment.normaliser and model.k0/k1 (the old layout) resumes; a real change is refused."
    cfg = T.tiny_config(tmp_path / 'old', epochs=2)
    T.train_stage(1, cfg, max_epochs=1)
    ck_path = tmp_path / 'old' / 'stage1' / 'checkpoint.pt'
    ck = torch.load(ck_path, map_location='cpu', weights_only=False)
    old = ck['config']
    p = old.pop('persistence')
    old['augment']['normaliser'] = p['normaliser']; old['model'].update(k0=p['k0'], k1=p['k1'])
    torch.save(ck, ck_path)
    T.train_stage(1, cfg, {'persistence.backend': 'cripser'}, resume=True)   # migrated, and the backend may change
    with pytest.raises(ValueError, match=r"config changed in .*persistence\.filtration"):
        T.train_stage(1, T.tiny_config(tmp_path / 'old', epochs=3), {'persistence.filtration': 'superlevel'}, resume=True)

# ---------------------------------------------------------------- NaN
class NaNAt(T.Trainer):
    "Injects a NaN loss at one (epoch, step), both 1-based."
    at = (2, 1)
    def compute_loss(self, batch):
        loss = super().compute_loss(batch)
        self.calls = getattr(self, 'calls', 0) + 1
        steps = len(self.parts.dataset) // self.cfg.train.batch_size
        if (self.calls - 1) // steps + 1 == self.at[0] and (self.calls - 1) % steps + 1 == self.at[1]:
            loss = loss * float('nan')
        return loss


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = T.tiny_config(tmp_path / 'n', epochs=3)
    with pytest.raises(T.NonFiniteLossError, match=r"stage 1: loss is nan at epoch 2, step 1/2") as e:
        NaNAt(T.build_stage(1, cfg), cfg).fit()
    assert 'checkpoint.pt (epoch 1)' in str(e.value)
    d = T.stage_dir(cfg, 1)
    ck = torch.load(d / 'checkpoint.pt', weights_only=False)
    assert ck['epoch'] == 1 and all(torch.isfinite(v).all() for v in ck['method'].values() if v.is_floating_point())
    assert len(list(csv.DictReader(open(d / 'metrics.csv')))) == 1
    assert not (d / 'visual.pt').exists()
    res = T.train_stage(1, cfg, resume=True)   # the run goes on from the good checkpoint
    assert res.complete and res.epochs_done == 3


def test_nan_in_first_epoch(tmp_path):
    cfg = T.tiny_config(tmp_path / 'n1')
    NaNAt.at = (1, 2)
    try:
        with pytest.raises(T.NonFiniteLossError, match='epoch 1, step 2/2.*no checkpoint was written'):
            NaNAt(T.build_stage(1, cfg), cfg).fit()
    finally: NaNAt.at = (2, 1)
    assert not (T.stage_dir(cfg, 1) / 'checkpoint.pt').exists()


# ---------------------------------------------------------------- stage order
def test_stage3_needs_stages_1_and_2(tmp_path):
    cfg = T.tiny_config(tmp_path / 's', epochs=1)
    with pytest.raises(FileNotFoundError, match=r"stage 3 .*needs stage 1.*run stage 1 \(visual pretraining"):
        T.finetune(cfg)
    T.pretrain_visual(cfg)
    with pytest.raises(FileNotFoundError, match=r"needs stage 2.*run stage 2 \(topology pretraining"):
        T.finetune(cfg)
    T.train_stage(2, cfg, {'train.epochs': 2}, max_epochs=1)   # unfinished
    with pytest.raises(FileNotFoundError, match=r"stage 2 \(topology pretraining\) has not finished"):
        T.finetune(cfg)
    with pytest.raises(FileNotFoundError, match=r"topology_ckpt=.*nowhere.pt does not exist"):
        T.finetune(cfg, {'topology_ckpt': str(tmp_path / 'nowhere.pt')})
    T.pretrain_topology(cfg)
    res = T.finetune(cfg)
    from topocl.model import load_checkpoint
    m = load_checkpoint(res.weights)
    assert m.config.kind == 'fused'
    # stage 3 starts from both pretrained encoders
    start = T.build_stage(3, T.apply_overrides(cfg, {'model.kind': 'fused'})).method.encoder
    for part, stage in (('visual', 1), ('topology', 2)):
        _states_equal(getattr(start, part).state_dict(),
                      getattr(load_checkpoint(T.stage_weights(cfg, stage)), part).state_dict())


# ---------------------------------------------------------------- DDP
DDP_SCRIPT = textwrap.dedent('''
    import json, os, sys, torch
    torch.set_num_threads(1)
    import lightly.utils.dist as ldist
    from topocl import train
    gathered = []
    _gather = ldist.gather
    def spy(x):
        out = _gather(x); gathered.append([tuple(t.shape) for t in out]); return out
    ldist.gather = spy
    batches = []
    class Spy(train.Trainer):
        def compute_loss(self, batch):
            batches.append(len(batch[0])); return super().compute_loss(batch)
    cfg = train.load_config(sys.argv[1])
    with train.distributed(cfg.device) as info:   # the process group, around the parts and their trainer
        tr = Spy(train.build_stage(int(sys.argv[2]), cfg, info), cfg, info=info)
        res = tr.fit()
    params = dict(tr.method.named_parameters())   # buffers (BN running stats) stay per process on CPU
    out = dict(rank=int(os.environ['RANK']), world=int(os.environ['WORLD_SIZE']), batches=batches,
               gathered=gathered[:2], complete=res.complete,
               checksum={k: float(v.detach().double().sum()) for k, v in params.items()})
    json.dump(out, open(os.path.join(sys.argv[3], f"rank{out['rank']}.json"), 'w'))
''')


def test_ddp_two_gloo_processes(tmp_path):
    cfg = dataclasses.replace(T.tiny_config(tmp_path / 'ddp', n_train=32, epochs=2, batch_size=16), keep_checkpoints=True)
    T.save_config(cfg, tmp_path / 'cfg.yaml')
    (tmp_path / 'ddp_run.py').write_text(DDP_SCRIPT)
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'TOPOCL_CACHE': str(tmp_path / 'cache')}
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
           str(tmp_path / 'ddp_run.py'), str(tmp_path / 'cfg.yaml'), '1', str(tmp_path)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    r0, r1 = (json.load(open(tmp_path / f'rank{r}.json')) for r in (0, 1))
    assert r0['world'] == r1['world'] == 2 and r0['complete'] and r1['complete']
    # each process takes half of the global batch, for 32 / 16 = 2 steps per epoch
    assert r0['batches'] == r1['batches'] == [8] * 4
    # SimCLR's negatives come from both processes
    assert r0['gathered'] and all(len(g) == 2 for g in r0['gathered'])
    # gradients were averaged: both processes hold the same parameters
    assert r0['checksum'] == r1['checksum']
    # rank 0 alone wrote checkpoint, config and one CSV row per epoch
    d = T.stage_dir(cfg, 1)
    assert [r['epoch'] for r in csv.DictReader(open(d / 'metrics.csv'))] == ['1', '2']
    ck = torch.load(d / 'checkpoint.pt', weights_only=False)
    assert ck['world_size'] == 2 and len(ck['rng']) == 2 and ck['epoch'] == 2
    assert p.stdout.count('epoch 2/2') == 1   # one process logs


# ---------------------------------------------------------------- real data
def test_topology_stage_on_breastmnist(tmp_path, medmnist_root):
    "Stage 2 (ROIs, calibration, on-the-fly diagrams) on 32 real BreastMNIST images."
    cfg = T.apply_overrides(T.tiny_config(tmp_path / 'b', epochs=1),
                            {'data.name': 'breastmnist', 'data.root': str(medmnist_root), 'data.options': {},
                             'data.max_samples': 32})
    res = T.pretrain_topology(cfg)
    assert res.complete and np.isfinite(res.metrics[-1]['loss'])


class _Evil:
    "Unpickling this runs a shell command: what a booby-trapped checkpoint would do."
    def __init__(self, path): self.path = path
    def __reduce__(self): return (os.system, (f'touch {self.path}',))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    "Training checkpoints are read with weights_only=True: a pickled callable is refused, and nothing runs."
    bad = tmp_path / 'stage1' / 'checkpoint.pt'; bad.parent.mkdir()
    torch.save(dict(stage=1, epoch=1, method={}, payload=_Evil(tmp_path / 'pwned')), bad)
    with pytest.raises(ValueError, match=r'checkpoint .*checkpoint\.pt holds objects other than tensors'):
        T.load_checkpoint_file(bad)
    assert not (tmp_path / 'pwned').exists()


def test_results_are_readable_by_the_group(tmp_path):
    "Checkpoints, weights, configs and metrics get the user's umask, not mkstemp's 0600."
    old = os.umask(0o022)
    try: res = T.train_stage(1, T.tiny_config(tmp_path / 'u', epochs=1))
    finally: os.umask(old)
    for f in (res.dir / 'checkpoint.pt', res.weights, res.dir / 'config.yaml', res.dir / 'metrics.csv'):
        assert f.stat().st_mode & 0o777 == 0o644, f


def test_weights_alone_are_enough_to_probe(tmp_path):
    "A stage's weights file records data set, size, ROI and persistence: copied away from its run, it still probes."
    import shutil
    from topocl.evaluate import probe_checkpoint
    from topocl.features import FeatureOptions
    res = T.train_stage(1, T.apply_overrides(T.tiny_config(tmp_path / 'run', epochs=1), {'data.options.n_classes': 2}))
    alone = tmp_path / 'elsewhere' / 'visual.pt'; alone.parent.mkdir()
    shutil.copy(res.weights, alone)
    r = probe_checkpoint(alone, probe=dict(epochs=2), options=FeatureOptions(device='cpu'), limit=16)
    assert (r['dataset'], r['image_size'], r['n_classes'], r['roi']) == ('synthetic', 28, 2, 'otsu')

def test_channels_last_gives_the_same_loss_and_gradients():
    "train.channels_last changes the memory layout, not the computation: one step's loss and gradients as in NCHW."
    import copy
    from torch.utils.data import default_collate
    cfg = T.apply_overrides(T.tiny_config('unused'), {'augment.calibration': None})
    parts = T.build_stage(1, cfg)
    batch = default_collate([parts.dataset[(0, i)] for i in range(8)])
    out = {}
    for cl in (False, True):
        torch.manual_seed(0)
        m = copy.deepcopy(parts.method)
        v1, v2 = parts.split(batch, 'cpu')
        if cl: m, v1, v2 = m.to(memory_format=torch.channels_last), T.to_channels_last(v1), T.to_channels_last(v2)
        loss = m(v1, v2); loss.backward()
        out[cl] = (loss.item(), [p.grad.clone() for p in m.parameters() if p.grad is not None])
    assert abs(out[True][0] - out[False][0]) < 1e-4 * abs(out[False][0])     # float32 rounding of other kernels
    a, b = (torch.cat([g.flatten() for g in out[cl][1]]) for cl in (True, False))
    # all gradients together: other conv kernels round differently, and BatchNorm over 8 images amplifies it to
    # ~1e-4-1e-2 here (varies with threads); a layout bug would be O(1)
    assert ((a - b).norm() / b.norm()).item() < 3e-2

def test_precision_settings_are_validated():
    # (a 1 or 0 for a boolean is read as true or false, as YAML and OmegaConf read it: not a bad value)
    for field, bad in (('train.amp_dtype', 'float8'), ('train.channels_last', 'maybe'), ('train.tf32', 'sometimes')):
        with pytest.raises(ValueError, match=field.replace('.', r'\.')):
            T.validate_config(T.apply_overrides(T.tiny_config('x'), {field: bad}))


# ---------------------------------------------------------------- stage 3 options
@pytest.fixture(scope='module')
def stages_1_2(tmp_path_factory):
    """Stages 1 and 2 of `tiny_config(epochs=1)`, trained once per module: {stage: TrainResult}. Read by
    test_stage3_settings_do_not_touch_stages_1_and_2 (the reference losses) and, copied, by
    test_stage3_settings_reach_the_optimizer_and_the_logs (stage 3 on top)."""
    d = tmp_path_factory.mktemp('stages-1-2')
    n = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('TOPOCL_CACHE', str(d / 'cache'))
        torch.set_num_threads(1)
        try: return {s: T.train_stage(s, T.tiny_config(d / 'run', epochs=1)) for s in (1, 2)}
        finally: torch.set_num_threads(n)


def test_stage3_settings_reach_the_optimizer_and_the_logs(tmp_path, stages_1_2):
    import shutil
    shutil.copytree(stages_1_2[1].dir.parent, tmp_path / 's3')          # stage 3 writes beside the shared stages
    cfg = T.tiny_config(tmp_path / 's3', epochs=1)
    over = {'stage3.lr_visual': 1e-5, 'stage3.lr_topology': 2e-4, 'stage3.lr_fusion': 5e-4, 'stage3.weight_decay': 1e-4,
            'stage3.clip_norm': 0.5, 'stage3.importance': 0.1, 'stage3.unimodal': 0.5, 'stage3.cross_modal': 0.5,
            'model.gate_temperature': 2.0, 'model.modality_dropout': 0.2}
    cfg = T.apply_overrides(cfg, over)
    tr = T.Trainer(T.build_stage(3, cfg), cfg)
    res = tr.fit()
    lrs = {g['part']: g['initial_lr'] for g in tr.opt.param_groups}
    assert lrs == {'fusion': 5e-4, 'visual': 1e-5, 'topology': 2e-4}
    model = tr.method.encoder
    part_of = {id(p): g['part'] for g in tr.opt.param_groups for p in g['params']}
    assert {part_of[id(p)] for p in model.visual.parameters()} == {'visual'}
    assert {part_of[id(p)] for p in model.fusion.parameters()} == {'fusion'}
    assert {g['weight_decay'] for g in tr.opt.param_groups} == {1e-4, 0.0} and tr.clip_norm == 0.5
    assert model.fusion.gate_temperature == 2.0 and model.fusion.modality_dropout == 0.2
    row = res.metrics[-1]
    for k in ('loss_importance', 'loss_switch', 'loss_hinge', 'loss_z_loss', 'loss_unimodal', 'loss_cross_modal', 'loss_ssl'):
        assert np.isfinite(row[k]), k
    assert abs(sum(v for k, v in row.items() if k.startswith('train_gate_')) - 1) < 1e-4
    # the logged total is the method's loss plus each term times its coefficient
    assert abs(row['loss'] - (row['loss_ssl'] + 0.1 * row['loss_importance'] + 0.5 * row['loss_unimodal']
                              + 0.5 * row['loss_cross_modal'])) < 1e-3
    header = (res.dir / 'metrics.csv').read_text().splitlines()[0]
    assert 'loss_importance' in header and 'train_gate_visual' in header
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ev = EventAccumulator(str(res.dir / 'tensorboard')).Reload()
    assert 'stage3/loss_importance' in ev.Tags()['scalars']


def test_stage3_settings_do_not_touch_stages_1_and_2(tmp_path, stages_1_2):
    other = T.apply_overrides(T.tiny_config(tmp_path / 'b', epochs=1), {'stage3.lr_visual': 1e-6, 'stage3.importance': 1.0,
                                                                          'stage3.clip_norm': 0.1})
    for s in (1, 2):
        a, b = stages_1_2[s], T.train_stage(s, other)      # a: the same config without the stage-3 settings
        assert [m['loss'] for m in a.metrics] == [m['loss'] for m in b.metrics]
