"""The first GPU hour in one command: what is missing, mixed precision, DDP, the sweep, throughput and data loading.

    python bench/gpu_check.py --out gpu_report                 # on a CUDA machine: at most ~8 minutes
    python bench/gpu_check.py --out gc-cpu --device cpu --quick   # the same code paths in tiny sizes (what the test runs)
    python bench/gpu_check.py --out gpu_report --only deps,amp     # some sections only

Sections (each one is wrapped: a failure is recorded and the next section still runs):

  deps        import-checks the project's dependencies and says what each missing one disables
  amp         every method of `topocl.methods.METHODS`, stage 3 (both encoders, MoE fusion, on-the-fly diagrams), a
              few steps of the real `topocl.train.Trainer` under fp32, bf16 and fp16 autocast, and bf16 with channels-last
              and TF32: losses must be finite (their values are recorded)
  ddp         `torchrun` with NCCL (gloo on CPU): 2 processes with >= 2 GPUs (or on CPU), else 1 process in an NCCL group
  sweep       `topocl sweep` with the local executor on the tests' tiny grid, on this device
  throughput  `bench/training.py`'s measurements (SimCLR baseline vs TopoCL stage 3) at 224 px with ResNet-50, against
              the paper's Table 6 (--quick: 32 px, ResNet-18, a few steps)
  dataloader  the share of time the training loop waits for data with 4, 8 and 16 DataLoader workers, diagrams
              computed on the fly (--quick: 0 and 1 worker)

It writes OUT/gpu_check.md (headed by the card's name, torch and CUDA versions, one table and verdict per section),
OUT/gpu_check.json (the same numbers) and OUT/gpu_check.log (everything the sections printed). A global time budget
(--budget, default 480 s) skips the sections left when it is spent. The exit status is 1 if a section failed, 0
otherwise (a section skipped because a package is missing is not a failure).
"""
from __future__ import annotations
import argparse, contextlib, datetime, importlib, io, json, math, os, platform, shutil, subprocess, sys, textwrap, time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
SECTIONS = ('deps', 'amp', 'ddp', 'sweep', 'throughput', 'dataloader')

# (import name, distribution, what is lost without it)
DEPS = [
    ('torch', 'torch', 'everything'),
    ('torchvision', 'torchvision', 'backbones and visual views: every training section'),
    ('numpy', 'numpy', 'everything'),
    ('scipy', 'scipy', 'augmentations and t-tests: every training section'),
    ('sklearn', 'scikit-learn', 'calibration (isotonic fit) and AUC: every training section'),
    ('skimage', 'scikit-image', 'medmnist needs it; Otsu ROIs'),
    ('pandas', 'pandas', 'calibration tables, the sweep'),
    ('yaml', 'pyyaml', 'configs: every training section'),
    ('PIL', 'pillow', 'image files'),
    ('tqdm', 'tqdm', 'progress bars (imported by topocl.callbacks): every training section'),
    ('joblib', 'joblib', 'parallel diagrams'),
    ('gudhi', 'gudhi', 'persistence diagrams (topocl.persistence imports it): every training section'),
    ('cripser', 'cripser', 'only the optional persistence.backend=cripser'),
    ('lightly', 'lightly', 'SSL losses and heads (topocl.methods imports it): every training section'),
    ('medmnist', 'medmnist', 'topocl.data imports medmnist.info at import time: every training section'),
    ('submitit', 'submitit', 'topocl.sweep imports it, and the topocl CLI imports topocl.sweep: the sweep section'),
    ('papermill', 'papermill', "the sweep's default papermill runner (this check then uses --runner python)"),
    ('ipykernel', 'ipykernel', 'the python3 kernel papermill executes notebooks in (else --runner python)'),
    ('segment_anything', 'segment-anything', 'SAM regions of interest (roi.extractor=sam, the paper preset); not used here'),
    ('fastcore', 'fastcore', "the notebooks' own tests (nbdev_test); not used here"),
    ('matplotlib', 'matplotlib', 'figures of the report (gates, calibration)'),
    ('seaborn', 'seaborn', 'figures of the report'),
    ('tensorboard', 'tensorboard', 'TensorBoard logging (tensorboard=true); these checks run with tensorboard=false'),
]
TRAIN_NEEDS = ['torch', 'torchvision', 'numpy', 'scipy', 'sklearn', 'pandas', 'yaml', 'tqdm', 'gudhi', 'lightly', 'medmnist']
NEEDS = {'deps': [], 'amp': TRAIN_NEEDS, 'ddp': TRAIN_NEEDS, 'sweep': TRAIN_NEEDS + ['submitit'],
         'throughput': TRAIN_NEEDS, 'dataloader': TRAIN_NEEDS}

# the paper's Table 6 (H100, 224 px, ResNet-50, batch 256): images/s and training hours of 150 epochs
PAPER_TABLE6 = {'simclr': dict(base=668, topocl=574, base_h=1.58, topocl_h=1.84, overhead=0.16),
                'byol': dict(base=614, topocl=539, base_h=1.72, topocl_h=1.96, overhead=0.14),
                'dino': dict(base=590, topocl=531, base_h=1.79, topocl_h=1.99, overhead=0.11),
                'barlowtwins': dict(base=825, topocl=700, base_h=1.28, topocl_h=1.51, overhead=0.18),
                'mocov3': dict(base=614, topocl=577, base_h=1.72, topocl_h=1.83, overhead=0.06)}

# the tiny grid of tests/test_sweep.py (TINY): the tiny preset, the baseline and TopoCL, short probes
TINY_GRID = dict(name='tiny', preset='tiny', datasets=['synthetic'], methods=['simclr', 'byol'], seeds=[0, 1],
                 variants=['baseline', 'topocl'], probe_epochs=5, limit=60, overrides=['tensorboard=false'])

# what tests/test_train.py's DDP test runs, plus explicit collectives (with one process the Trainer does not wrap DDP)
DDP_SCRIPT = textwrap.dedent('''
    import json, os, sys, time, torch, torch.distributed as dist
    from topocl import train as T
    cfg = T.load_config(sys.argv[1])
    cuda = cfg.device.startswith('cuda')
    local = int(os.environ.get('LOCAL_RANK', 0))
    if cuda: torch.cuda.set_device(local)
    else: torch.set_num_threads(1)
    dist.init_process_group('nccl' if cuda else 'gloo')
    rank, world = dist.get_rank(), dist.get_world_size()
    dev = torch.device(f'cuda:{local}' if cuda else 'cpu')
    x = torch.full((4,), float(rank + 1), device=dev); dist.all_reduce(x)
    parts = [torch.zeros(2, device=dev) for _ in range(world)]; dist.all_gather(parts, torch.full((2,), float(rank), device=dev))
    t0 = time.perf_counter()
    info = T.init_distributed(cfg.device)   # joins the group started above
    tr = T.Trainer(T.build_stage(1, cfg, info), cfg, info=info); res = tr.fit()
    params = dict(tr.method.named_parameters())
    out = dict(rank=rank, world=world, backend=str(dist.get_backend()), all_reduce=float(x[0]),
               all_gather=[float(p[0]) for p in parts], complete=res.complete, loss=[m['loss'] for m in res.metrics],
               ddp=tr.info.distributed, seconds=round(time.perf_counter() - t0, 2),
               checksum=sum(float(v.detach().double().sum()) for v in params.values()))
    json.dump(out, open(os.path.join(sys.argv[2], f'rank{rank}.json'), 'w'))
    dist.destroy_process_group()
''')


class Skip(Exception):
    "A section (or part) that cannot run here, with the reason; not a failure."


class Ctx:
    "What the sections share: options, device, time budget, the work folder, the modules found."
    def __init__(self, a, out:Path):
        self.a, self.out, self.quick = a, out, a.quick
        self.work = out / 'work'
        self.t0, self.budget = time.perf_counter(), a.budget
        self.found, self.cache = {}, {}

    def left(self)->float: return self.budget - (time.perf_counter() - self.t0)
    @property
    def cuda(self)->bool: return self.a.device == 'cuda'
    def have(self, mod:str)->bool:
        if mod not in self.found: self.found[mod] = importlib.util.find_spec(mod) is not None
        return self.found[mod]
    def env(self)->dict:
        return {**os.environ, 'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', '1' if not self.cuda else '4'),
                'TOPOCL_CACHE': str(self.work / 'cache'), 'PYTHONPATH': os.pathsep.join(
                    [str(ROOT)] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p])}

    def run(self, cmd, timeout:float, **kw):
        "A subprocess capped by the budget; a timeout caused by the budget is a Skip, one within its own limit a failure."
        cap = max(10.0, self.left())
        try: return subprocess.run(cmd, capture_output=True, text=True, env=self.env(), timeout=min(timeout, cap), **kw)
        except subprocess.TimeoutExpired:
            if cap < timeout: raise Skip(f"stopped by the time budget after {cap:.0f} s") from None
            raise RuntimeError(f"timed out after {timeout:.0f} s: {' '.join(map(str, cmd))[:300]}") from None


def _tail(text, n=1500): return text[-n:] if text else ''


# ------------------------------------------------------------------------------------------------------------- deps
def sec_deps(ctx:Ctx)->dict:
    rows, notes = [], []
    from importlib import metadata
    for mod, dist_name, what in DEPS:
        ok, version, err = ctx.have(mod), '', ''
        if ok:
            try:
                m = importlib.import_module(mod)
                version = getattr(m, '__version__', '') or metadata.version(dist_name)
            except Exception as e:   # installed but broken (e.g. a binary built for another numpy)
                ok, err = False, f"{type(e).__name__}: {e}"[:160]
                ctx.found[mod] = False
        rows.append(dict(package=dist_name, status='ok' if ok else ('broken' if err else 'MISSING'), version=str(version),
                         **{'lost without it': what if not ok else ''}, error=err))
    missing = [r['package'] for r in rows if r['status'] != 'ok']
    for name in ('topocl.train', 'topocl.sweep', 'topocl.cli'):   # what the project itself can import
        try: importlib.import_module(name); rows.append(dict(package=name, status='ok', version='', error=''))
        except Exception as e:
            rows.append(dict(package=name, status='import fails', version='', error=f"{type(e).__name__}: {e}"[:160]))
    notes.append(f"missing or broken: {', '.join(missing)}" if missing else 'every dependency imports')
    if missing: notes.append('offline install of the missing ones: see "The first GPU hour" in bench/README.md '
                             '(scripts/wheelhouse.py)')
    try: import torch
    except ImportError: return dict(rows=rows, notes=notes, failed=True, missing=missing)   # nothing can run
    info = dict(torch=torch.__version__, cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version() if ctx.cuda else None,
                gpus=torch.cuda.device_count() if torch.cuda.is_available() else 0,
                bf16=bool(ctx.cuda and torch.cuda.is_bf16_supported()), nccl=_nccl_version() if ctx.cuda else None)
    notes.append(', '.join(f"{k} {v}" for k, v in info.items()))
    # a missing dependency is reported, not failed: the sections that need it are skipped with the reason
    return dict(rows=rows, notes=notes, info=info, missing=missing)


def _nccl_version():
    import torch
    try: v = torch.cuda.nccl.version(); return '.'.join(map(str, v)) if isinstance(v, tuple) else str(v)
    except Exception as e: return f'unavailable ({e})'


# -------------------------------------------------------------------------------------------------------------- amp
def tiny_cfg(ctx:Ctx, out, method='simclr', **kw):
    "tests' tiny config (28 px, ResNet-18, narrow topology encoder and MoE) on this device, stage 3 from scratch."
    from topocl import train as T
    cfg = T.tiny_config(out, method=method, **kw)
    return T.apply_overrides(cfg, {'device': ctx.a.device, 'tensorboard': False, 'visual_ckpt': 'scratch',
                                   'topology_ckpt': 'scratch', 'augment.calibration': str(shared_calibration(ctx))})


def shared_calibration(ctx:Ctx)->Path:
    "One tiny calibration for every stage-3 run of the checks (its quality does not matter here)."
    p = ctx.work / 'tiny-calibration.json'
    if not p.is_file():
        from topocl import train as T
        cfg = T.apply_overrides(T.tiny_config(ctx.work / 'calib'), {'tensorboard': False})
        images = T.load_training_images(cfg)
        T.ensure_calibration(T.apply_overrides(cfg, {'augment.calibration': None}), images, T.training_rois(cfg, images))
        shutil.copy(T.calibration_path(cfg), p)
    return p


def _make_check_trainer():
    import torch
    from topocl import train as T

    class CheckTrainer(T.Trainer):
        "The real Trainer; records each step's loss. On CPU (where the Trainer runs in float32) it adds CPU autocast."
        cpu_amp = None
        def compute_loss(self, batch):
            with torch.autocast('cpu', dtype=self.cpu_amp or torch.bfloat16, enabled=self.cpu_amp is not None):
                return super().compute_loss(batch)
        def train_step(self, batch, epoch, i):
            s = super().train_step(batch, epoch, i)
            self.losses = getattr(self, 'losses', []) + [s.loss]; self.gnorms = getattr(self, 'gnorms', []) + [s.grad_norm]
            return s
    return CheckTrainer


AMP_MODES = [  # name, amp dtype, channels_last, tf32
    ('fp32', None, False, False), ('bf16', 'bfloat16', False, False), ('fp16', 'float16', False, False),
    ('bf16+channels_last+tf32', 'bfloat16', True, True)]


def sec_amp(ctx:Ctx)->dict:
    import torch
    from topocl import train as T
    from topocl.methods import METHODS
    Trainer = _make_check_trainer()
    rows, notes, failed = [], [], False
    tf32_before = _tf32()
    n_train, batch = (32, 16) if ctx.quick else (64, 16)
    notes.append(f"stage 3 of the tiny config (28 px, ResNet-18), random encoders, {n_train // batch} steps of batch {batch} "
                 f"per run, the real topocl.train.Trainer on {ctx.a.device}" +
                 ('; on CPU the Trainer runs float32, so the check adds CPU autocast around its loss' if not ctx.cuda else ''))
    fp16_cpu_error = None
    for method in METHODS:
        for mode, dtype, cl, tf32 in AMP_MODES:
            row = dict(method=method, mode=mode)
            if ctx.left() <= 0:
                rows.append({**row, 'result': 'skipped', 'loss per step': '', 'note': 'time budget spent'}); continue
            if not ctx.cuda and dtype == 'float16' and fp16_cpu_error:
                rows.append({**row, 'result': 'skipped', 'loss per step': '', 'note': fp16_cpu_error}); continue
            first = next(iter(METHODS))
            if not ctx.cuda and ctx.quick and dtype == 'float16':
                # fp16 autocast on a CPU takes ~15 s a run and goes through no code that bf16 does not: the Trainer's
                # own fp16 path (autocast with a GradScaler) is CUDA's, checked by the full run on a GPU
                rows.append({**row, 'result': 'skipped', 'loss per step': '',
                             'note': '--quick on CPU: fp16 is checked on a GPU (its GradScaler path is CUDA only)'})
                continue
            if not ctx.cuda and ctx.quick and mode != 'bf16' and method != first:
                # what these modes exercise (the fp32 reference, memory format, matmul precision) does not depend on
                # the method: one method shows the path runs
                rows.append({**row, 'result': 'skipped', 'loss per step': '',
                             'note': f'--quick on CPU: {mode} checked on {first} only; bf16 on every method'})
                continue
            cfg = T.apply_overrides(tiny_cfg(ctx, ctx.work / 'amp' / f'{method}-{mode}', method, n_train=n_train,
                                             batch_size=batch, epochs=1),
                                    {'train.amp': dtype is not None, 'train.amp_dtype': dtype or 'auto',
                                     'train.channels_last': cl, 'train.tf32': tf32})
            _tf32(tf32_before)
            t0 = time.perf_counter()
            try:
                tr = Trainer(T.build_stage(3, cfg), cfg)
                if not ctx.cuda and dtype: tr.cpu_amp = getattr(torch, dtype)
                with _quiet_warnings(): tr.fit()
                losses = getattr(tr, 'losses', [])
                ok = bool(losses) and all(math.isfinite(l) for l in losses)
                if ctx.cuda and tr.amp_dtype != (getattr(torch, dtype) if dtype else None):
                    ok, note = False, f"the Trainer autocast {tr.amp_dtype}, not {dtype}"
                else: note = ''
                if tf32 and ctx.cuda and not _tf32()[0]:
                    ok, note = False, 'train.tf32=true did not turn TF32 on'
                rows.append({**row, 'result': 'pass' if ok else 'FAIL', 'loss per step': ', '.join(f'{l:.4f}' for l in losses),
                             'seconds': round(time.perf_counter() - t0, 1), 'note': note or ('' if ok else 'non-finite loss')})
                failed |= not ok
            except Exception as e:
                msg = f"{type(e).__name__}: {e}".splitlines()[0][:200]
                if not ctx.cuda and dtype == 'float16' and _is_unsupported(e):
                    fp16_cpu_error = f"fp16 autocast unsupported on CPU here ({msg})"
                    rows.append({**row, 'result': 'skipped', 'loss per step': '', 'note': fp16_cpu_error}); continue
                rows.append({**row, 'result': 'FAIL', 'loss per step': '', 'seconds': round(time.perf_counter() - t0, 1),
                             'note': msg})
                print(traceback.format_exc()); failed = True
    _tf32(tf32_before)
    return dict(rows=rows, notes=notes, failed=failed)


def _tf32(flags=None):
    "TF32 flags (matmul, cuDNN): read them, or set them back."
    import torch
    b = torch.backends
    if flags is not None:
        with contextlib.suppress(Exception): b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32 = flags
    with _quiet_warnings(): return (bool(b.cuda.matmul.allow_tf32), bool(b.cudnn.allow_tf32))


def _is_unsupported(e): return isinstance(e, (RuntimeError, NotImplementedError)) and any(
    s in str(e) for s in ('not implemented for', 'not supported', 'Half', "unsupported"))


@contextlib.contextmanager
def _quiet_warnings():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('ignore'); yield


# -------------------------------------------------------------------------------------------------------------- ddp
def sec_ddp(ctx:Ctx)->dict:
    import torch
    from topocl import train as T
    n = min(2, torch.cuda.device_count()) if ctx.cuda else 2
    d = ctx.work / 'ddp'; d.mkdir(parents=True, exist_ok=True)
    cfg = T.apply_overrides(T.tiny_config(d / 'run', n_train=32, epochs=1, batch_size=16),
                            {'device': ctx.a.device, 'tensorboard': False})
    T.save_config(cfg, d / 'cfg.yaml'); (d / 'ddp_run.py').write_text(DDP_SCRIPT)
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', str(n),
           str(d / 'ddp_run.py'), str(d / 'cfg.yaml'), str(d)]
    t0 = time.perf_counter()
    p = ctx.run(cmd, timeout=240)
    dt = time.perf_counter() - t0
    backend = 'nccl' if ctx.cuda else 'gloo'
    notes = [f"`python -m torch.distributed.run --standalone --nproc_per_node {n}`, {backend}, stage 1 of the tiny config "
             f"(1 epoch, global batch 16), {dt:.1f} s including start-up"]
    if ctx.cuda and n == 1:
        notes.append('one GPU: NCCL collectives in a one-process group and the Trainer inside it (DDP wrapping needs >= 2 '
                     'processes; NCCL refuses two ranks on one GPU)')
    if p.returncode != 0:
        print(p.stdout, p.stderr)
        return dict(rows=[], notes=notes + [f"exit code {p.returncode}: {_tail(p.stderr)}"], failed=True)
    ranks = [json.loads((d / f'rank{r}.json').read_text()) for r in range(n)]
    want = n * (n + 1) / 2
    rows, failed = [], False
    for r in ranks:
        ok = (r['backend'] == backend and r['world'] == n and r['all_reduce'] == want and r['all_gather'] == list(map(float, range(n)))
              and r['complete'] and all(math.isfinite(l) for l in r['loss']) and r['ddp'] == (n > 1))
        failed |= not ok
        rows.append(dict(rank=r['rank'], world=r['world'], backend=r['backend'], all_reduce=r['all_reduce'],
                         all_gather=r['all_gather'], DDP=r['ddp'], loss=', '.join(f'{l:.4f}' for l in r['loss']),
                         seconds=r['seconds'], result='pass' if ok else 'FAIL'))
    if n > 1 and len({r['checksum'] for r in ranks}) != 1:
        failed = True; notes.append('the processes hold different parameters after training: gradients were not averaged')
    return dict(rows=rows, notes=notes, failed=failed, processes=n)


# ------------------------------------------------------------------------------------------------------------ sweep
def sec_sweep(ctx:Ctx)->dict:
    import yaml
    grid = dict(TINY_GRID)
    if ctx.quick: grid.update(methods=['simclr'], seeds=[0])
    grid['overrides'] = grid['overrides'] + [f'device={ctx.a.device}']
    d = ctx.work / 'sweep'; d.mkdir(parents=True, exist_ok=True)
    (d / 'grid.yaml').write_text(yaml.safe_dump(grid))
    runner = 'papermill' if ctx.have('papermill') and ctx.have('ipykernel') else 'python'
    jobs = 1 if ctx.quick else 2
    cmd = [sys.executable, '-m', 'topocl.cli', 'sweep', str(d / 'grid.yaml'), '--results', str(d / 'res'),
           '--executor', 'local', '--runner', runner, '--jobs', str(jobs)]
    t0 = time.perf_counter()
    p = ctx.run(cmd, timeout=420)
    dt = time.perf_counter() - t0
    print(p.stdout, p.stderr)
    n = len(grid['methods']) * len(grid['seeds'])
    notes = [f"`topocl sweep grid.yaml --executor local --runner {runner} --jobs {jobs}`: the tests' tiny grid "
             f"({', '.join(grid['methods'])} x seeds {grid['seeds']}, baseline and TopoCL, tiny preset) on {ctx.a.device}, "
             f"{dt:.1f} s" + ('' if runner == 'papermill' else ' (papermill or ipykernel missing: the python runner)')]
    import pandas as pd
    rows, failed = [], p.returncode != 0 or f'{n} done' not in p.stdout
    for rid in (pd.read_csv(d / 'res' / 'manifest.csv').id if (d / 'res' / 'manifest.csv').is_file() else []):
        run = d / 'res' / 'runs' / rid
        res = run / 'results.csv'
        done = (run / 'done.json').is_file()
        row = dict(run=rid, status='done' if done else 'FAILED', seconds=json.loads((run / 'done.json').read_text())['seconds'] if done else '')
        if res.is_file():
            r = pd.read_csv(res)
            for _, x in r.iterrows():
                row[f"{x.get('variant', x.get('row', '?'))} test_acc"] = round(float(x['test_acc']), 3) if 'test_acc' in x else ''
        elif (run / 'log.txt').is_file(): notes.append(f"{rid}: {_tail((run / 'log.txt').read_text(), 800)}")
        rows.append(row)
    if failed: notes.append(f"exit code {p.returncode}: {_tail(p.stdout, 600)} {_tail(p.stderr, 1200)}")
    return dict(rows=rows, notes=notes, failed=failed, runner=runner)


# ------------------------------------------------------------------------------------------------------- throughput
def bench_setup(ctx:Ctx):
    "bench/training.py's setting at the size of this run, its data saved once and its calibration (shared by two sections)."
    if 'bench' in ctx.cache: return ctx.cache['bench']
    sys.path.insert(0, str(BENCH))
    import training as B
    from topocl import train as T
    from topocl.data import save_synthetic
    a = ctx.a
    # end to end: enough steps per epoch that the workers' pipeline fills (each worker makes whole batches, so an
    # epoch starts with one batch's latency); the model step alone uses the paper's batch of 256
    if ctx.quick: name, size, arch, small, batch, steps, model_batch = '32px-resnet18', 32, 'resnet18', True, a.batch or 8, 2, a.batch or 8
    else: name, size, arch, small, batch, steps, model_batch = '224px-resnet50', 224, 'resnet50', False, a.batch or 64, 24, 256
    out = ctx.work / 'bench'; out.mkdir(parents=True, exist_ok=True)
    workers = 1 if ctx.quick else max(1, min(16, (os.cpu_count() or 2) - 1))
    cfg = B.setting(name, size, arch, small, True, batch, steps, workers, out)
    cfg = T.apply_overrides(cfg, {'device': a.device, 'tensorboard': False})
    t0 = time.perf_counter()
    o = cfg.data.options
    save_synthetic(cfg.data.split, size=size, rgb=o['rgb'], n=o['n'])   # generated once (17 ms an image at 224 px), then mapped
    print(f"  synthetic set: {o['n']} images of {size} px in {time.perf_counter() - t0:.1f} s")
    cfg = T.apply_overrides(cfg, {'augment.calibration': B.make_calibration(cfg, out, 4)})
    info = dict(name=name, size=size, arch=arch, batch=batch, steps=steps, workers=workers, model_batch=max(2, min(model_batch, batch * steps)))
    ctx.cache['bench'] = (B, cfg, info)
    return ctx.cache['bench']


def timed_run(stage:int, cfg)->dict:
    "The real Trainer for two epochs; the second epoch as the Trainer logs it, and from its second step on (steady)."
    from topocl import train as T

    class Timed(T.Trainer):
        def train_epoch(self, epoch):
            self.marks = []; return super().train_epoch(epoch)
        def train_step(self, batch, epoch, i):
            t0 = time.perf_counter(); s = super().train_step(batch, epoch, i)   # the step ends with .item(): synchronised
            self.marks.append((t0, time.perf_counter())); return s

    with _quiet_warnings():
        tr = Timed(T.build_stage(stage, cfg), cfg); res = tr.fit()
    m, marks, b = res.metrics[-1], tr.marks, cfg.train.batch_size
    out = dict(img_s=m['img_per_s'], wait=m['data_wait'], steady_img_s=float('nan'), steady_wait=float('nan'))
    if len(marks) >= 2:
        span = marks[-1][1] - marks[0][1]
        out.update(steady_img_s=(len(marks) - 1) * b / span,
                   steady_wait=sum(marks[i][0] - marks[i - 1][1] for i in range(1, len(marks))) / span)
    return out


def sec_throughput(ctx:Ctx)->dict:
    import torch
    from topocl import train as T
    B, cfg, s = bench_setup(ctx)
    dtype = T.autocast_dtype(cfg.train, torch.device('cuda' if ctx.cuda else 'cpu'))
    mcfg = T.apply_overrides(cfg, {'train.batch_size': s['model_batch']})
    base_model, vis_ds = B.model_step_imgs(1, mcfg, repeats=2)
    topo_model, topo_ds = B.model_step_imgs(3, mcfg, repeats=2)
    if ctx.cuda: torch.cuda.empty_cache()
    n = min(8 if s['size'] > 64 else 32, len(vis_ds), len(topo_ds))
    ms_vis, ms_topo = B.per_image_ms(vis_ds, n), B.per_image_ms(topo_ds, n)
    e2e = {stage: timed_run(stage, T.apply_overrides(cfg, {'out_dir': str(ctx.work / 'bench' / f'e2e-{stage}')}))
           for stage in (1, 3)}
    paper = PAPER_TABLE6['simclr']
    def row(what, b, t, waits=''):
        r = t / b
        return {'what': what, 'baseline img/s': round(b, 1), 'TopoCL img/s': round(t, 1), 'ratio': round(r, 3),
                'overhead': f"{1 / r - 1:+.0%}", 'data wait base / TopoCL': waits}
    rows = [row(f"model step alone, batch {s['model_batch']}", base_model, topo_model),
            row(f"end to end, batch {s['batch']}, 2nd epoch", e2e[1]['img_s'], e2e[3]['img_s'],
                f"{e2e[1]['wait']:.0%} / {e2e[3]['wait']:.0%}"),
            row("end to end, from the epoch's 2nd step", e2e[1]['steady_img_s'], e2e[3]['steady_img_s'],
                f"{e2e[1]['steady_wait']:.0%} / {e2e[3]['steady_wait']:.0%}"),
            {**row('paper Table 6 (H100, batch 256)', paper['base'], paper['topocl']),
             'overhead': f"+{paper['overhead']:.0%} (training time)"}]
    notes = [f"SimCLR, {s['name']}, autocast {str(dtype).replace('torch.', '') if dtype else 'off (float32)'}, {s['workers']} DataLoader workers, {s['steps']} steps/epoch end to end; "
             f"views per image in one process: visual {ms_vis:.1f} ms, topology-aware + 2 diagrams {ms_topo:.1f} ms",
             "overhead = baseline img/s / TopoCL img/s - 1; the paper's column is the increase of training time "
             f"(its img/s ratio {paper['topocl']}/{paper['base']} = {paper['topocl'] / paper['base']:.2f} is "
             f"{paper['base'] / paper['topocl'] - 1:+.0%})"]
    if ctx.quick: notes.append('--quick: tiny sizes; the numbers only show that the path runs (not comparable to the paper)')
    vals = [base_model, topo_model, e2e[1]['img_s'], e2e[3]['img_s']]
    return dict(rows=rows, notes=notes, failed=not all(math.isfinite(x) and x > 0 for x in vals), setting=s,
                ms_per_image=dict(visual=ms_vis, topology=ms_topo), model_step=dict(baseline=base_model, topocl=topo_model),
                end_to_end={str(k): v for k, v in e2e.items()})


def sec_dataloader(ctx:Ctx)->dict:
    from topocl import train as T
    B, cfg, s = bench_setup(ctx)
    workers = (0, 1) if ctx.quick else (4, 8, 16)
    rows = []
    notes = [f"TopoCL stage 3 (SimCLR, {s['name']}, batch {s['batch']}, {s['steps']} steps/epoch): topology-aware views and "
             "their diagrams computed on the fly in the DataLoader workers; the second of two epochs, as the Trainer "
             "logs it (its first batch waits for a worker to make a whole batch) and from its second step on"]
    cores = os.cpu_count() or 1
    for w in workers:
        if ctx.left() <= 0: rows.append(dict(workers=w, result='skipped', note='time budget spent')); continue
        r = timed_run(3, T.apply_overrides(cfg, {'num_workers': w, 'out_dir': str(ctx.work / 'dl' / f'w{w}')}))
        rows.append({'workers': w, 'img/s': round(r['img_s'], 1), 'waiting for data': f"{r['wait']:.1%}",
                     'img/s from step 2': round(r['steady_img_s'], 1), 'waiting from step 2': f"{r['steady_wait']:.1%}",
                     'result': 'pass' if math.isfinite(r['img_s']) and r['img_s'] > 0 else 'FAIL',
                     'note': f'as many workers as the {cores} CPU cores, or more' if w >= cores else ''})
    return dict(rows=rows, notes=notes, failed=any(r['result'] == 'FAIL' for r in rows))


FUNCS = dict(deps=sec_deps, amp=sec_amp, ddp=sec_ddp, sweep=sec_sweep, throughput=sec_throughput, dataloader=sec_dataloader)


# ------------------------------------------------------------------------------------------------------------ driver
def run_section(ctx:Ctx, name:str, log)->dict:
    rec = dict(name=name, status='skipped', seconds=0.0, rows=[], notes=[])
    if ctx.left() <= 0:
        rec['reason'] = f"time budget of {ctx.budget:.0f} s spent"; return rec
    missing = [m for m in NEEDS[name] if not ctx.have(m)]
    if missing:
        rec['reason'] = f"missing package(s): {', '.join(missing)}"; return rec
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            print(f"\n===== {name} ({datetime.datetime.now():%H:%M:%S})", flush=True)
            out = FUNCS[name](ctx)
        rec.update(out, status='fail' if out.pop('failed', False) else 'pass')
        rec.pop('failed', None)
    except Skip as e: rec.update(status='skipped', reason=str(e))
    except ModuleNotFoundError as e:
        top = (e.name or '').split('.')[0]
        if top and importlib.util.find_spec(top) is None: rec.update(status='skipped', reason=f"missing package: {top}")
        else: rec.update(status='fail', reason=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-3000:])
    except Exception as e:
        rec.update(status='fail', reason=f"{type(e).__name__}: {e}".splitlines()[0][:300], traceback=traceback.format_exc()[-3000:])
        print(rec['traceback'], file=log, flush=True)
    rec['seconds'] = round(time.perf_counter() - t0, 1)
    return rec


def header(ctx:Ctx)->dict:
    h = dict(device=ctx.a.device, card='cpu', python=platform.python_version(), cpu_cores=os.cpu_count(),
             host=platform.node(), date=datetime.datetime.now().isoformat(timespec='seconds'),
             mode='quick' if ctx.quick else 'full', budget_s=ctx.budget)
    try:
        import torch
        h.update(torch=torch.__version__, cuda=torch.version.cuda)
        if ctx.cuda:
            h.update(card=torch.cuda.get_device_name(0), gpus=torch.cuda.device_count(),
                     gpu_memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
    except Exception as e: h['torch'] = f'cannot import torch: {e}'
    return h


def _cell(v): return str(v).replace('|', '\\|').replace('\n', ' ')


def md_table(rows:list)->str:
    if not rows: return ''
    cols = list(dict.fromkeys(k for r in rows for k in r if k != 'error' or any(x.get('error') for x in rows)))
    out = ['| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
    out += ['| ' + ' | '.join(_cell(r.get(c, '')) for c in cols) + ' |' for r in rows]
    return '\n'.join(out)


VERDICT = {'pass': 'PASS', 'fail': 'FAIL', 'skipped': 'SKIPPED'}


def write_report(ctx:Ctx, head:dict, secs:list)->Path:
    h = head
    lines = [f"# GPU check: {h['card']}", '',
             f"torch {h.get('torch')}, CUDA {h.get('cuda')}, Python {h['python']}, {h['cpu_cores']} CPU cores"
             + (f", {h.get('gpus')} GPU(s) of {h.get('gpu_memory_gib')} GiB" if ctx.cuda else '')
             + f"; device {h['device']}, {h['mode']} mode, budget {h['budget_s']:.0f} s, took {h['seconds']:.0f} s; {h['date']} on {h['host']}",
             '', '| section | result | seconds | note |', '|---|---|---|---|']
    for s in secs:
        lines.append(f"| {s['name']} | {VERDICT[s['status']]} | {s['seconds']} | {_cell(s.get('reason', ''))} |")
    overall = 'FAIL' if any(s['status'] == 'fail' for s in secs) else 'PASS'
    lines += ['', f"Overall: **{overall}** (a section skipped for a missing package or the time budget is not a failure)."]
    for s in secs:
        lines += ['', f"## {s['name']}: {VERDICT[s['status']]} ({s['seconds']} s)", '']
        if s.get('reason'): lines += [f"Reason: {s['reason']}", '']
        for n in s.get('notes', []): lines += [f"- {n}"]
        if s.get('notes'): lines.append('')
        if s.get('rows'): lines += [md_table(s['rows']), '']
        if s.get('traceback'): lines += ['```', s['traceback'].strip()[-1500:], '```', '']
    p = ctx.out / 'gpu_check.md'
    p.write_text('\n'.join(lines) + '\n')
    return p


def main(argv=None)->int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--out', required=True, help='folder for gpu_check.md, gpu_check.json and gpu_check.log')
    ap.add_argument('--device', choices=['cuda', 'cpu'], default=None, help='default: cuda if available, else cpu')
    ap.add_argument('--quick', action='store_true', help='tiny sizes (28/32 px, ResNet-18, a few steps): the code paths only')
    ap.add_argument('--only', default=None, help=f"comma-separated sections to run, of: {','.join(SECTIONS)}")
    ap.add_argument('--budget', type=float, default=480, help='seconds; sections not started when it is spent are skipped')
    ap.add_argument('--batch', type=int, default=None, help='batch of the throughput and dataloader sections '
                    '(default: 256 as in the paper, --quick: 8)')
    ap.add_argument('--keep-work', action='store_true', help='keep OUT/work (runs, checkpoints, the sweep) afterwards')
    a = ap.parse_args(argv)
    only = SECTIONS if a.only is None else tuple(s.strip() for s in a.only.split(',') if s.strip())
    bad = [s for s in only if s not in SECTIONS]
    if bad: ap.error(f"--only: unknown section(s) {', '.join(bad)}; choose from {', '.join(SECTIONS)}")
    try:
        import torch
        cuda_ok = torch.cuda.is_available()
    except ImportError: cuda_ok = False
    a.device = a.device or ('cuda' if cuda_ok else 'cpu')
    if a.device == 'cuda' and not cuda_ok: ap.error('--device cuda: CUDA is not available here (use --device cpu)')
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(a, out)
    if ctx.work.exists(): shutil.rmtree(ctx.work)
    ctx.work.mkdir(parents=True)
    os.environ['TOPOCL_CACHE'] = str(ctx.work / 'cache')   # ROI caches and synthetic sets stay in the work folder
    head = header(ctx)
    print(f"GPU check on {head['card']} (torch {head.get('torch')}, CUDA {head.get('cuda')}), {head['mode']} mode, "
          f"budget {a.budget:.0f} s -> {out / 'gpu_check.md'}", flush=True)
    secs = []
    with open(out / 'gpu_check.log', 'w') as log:
        for name in only:
            s = run_section(ctx, name, log)
            secs.append(s)
            print(f"  {name:11s} {VERDICT[s['status']]:8s} {s['seconds']:6.1f} s  {s.get('reason', '')}", flush=True)
    head['seconds'] = round(time.perf_counter() - ctx.t0, 1)
    report = write_report(ctx, head, secs)
    (out / 'gpu_check.json').write_text(json.dumps(dict(header=head, sections=secs), indent=1, default=str))
    if not a.keep_work: shutil.rmtree(ctx.work, ignore_errors=True)
    failed = [s['name'] for s in secs if s['status'] == 'fail']
    print(f"{'FAILED: ' + ', '.join(failed) if failed else 'all sections run passed'} ({head['seconds']:.0f} s); report: {report}")
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
