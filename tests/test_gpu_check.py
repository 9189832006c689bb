"""bench/gpu_check.py on CPU in tiny sizes (so that the GPU check cannot rot), and scripts/wheelhouse.py's selection
of what goes into the wheelhouse (no network)."""
import importlib.util, json, os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


def gpu_check(out, *args, timeout=600):
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'TOPOCL_CACHE': str(out / 'cache')}
    return subprocess.run([sys.executable, str(ROOT / 'bench' / 'gpu_check.py'), '--device', 'cpu', '--quick', '--out', str(out), *args],
                          capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)


def check_report(out, sections):
    from topocl.methods import METHODS
    md, js = (out / 'gpu_check.md').read_text(), json.loads((out / 'gpu_check.json').read_text())
    assert md.startswith('# GPU check: cpu') and js['header']['card'] == 'cpu' and js['header']['torch']
    assert [s['name'] for s in js['sections']] == sections
    for s in js['sections']:
        assert s['status'] in ('pass', 'skipped'), (s['name'], s.get('reason'), s.get('traceback'))
        if s['status'] == 'skipped': assert s.get('reason'), s['name']
        assert f"## {s['name']}: " in md
    if 'amp' in sections:
        amp = next(s for s in js['sections'] if s['name'] == 'amp')
        assert {r['method'] for r in amp['rows']} == set(METHODS)
        for m in METHODS: assert f'| {m} |' in md, m
        done = [r for r in amp['rows'] if r['result'] == 'pass']
        assert {r['method'] for r in done if r['mode'] == 'bf16'} == set(METHODS)   # bf16 autocast runs on CPU
        assert all(r['loss per step'] for r in done)
        assert all(r['result'] == 'pass' or (r['result'] == 'skipped' and r['note']) for r in amp['rows'])
    return md, js


def test_quick_deps_and_amp_on_cpu(tmp_path):
    "The fast subset: dependencies, every method's stage-3 steps under bf16, and fp32 and channels-last + TF32 on one (fp16: GPU)."
    p = gpu_check(tmp_path, '--only', 'deps,amp')
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    md, js = check_report(tmp_path, ['deps', 'amp'])
    deps = js['sections'][0]
    assert {'gudhi', 'lightly', 'submitit', 'papermill', 'medmnist', 'fastcore'} <= {r['package'] for r in deps['rows']}
    assert not (tmp_path / 'work').exists()   # the runs' folder is cleaned up
    amp, gc = js['sections'][1], _load('bench/gpu_check.py', 'gpu_check')
    from topocl.methods import METHODS
    first = next(iter(METHODS))
    assert {r['mode'] for r in amp['rows'] if r['method'] == first and r['result'] == 'pass'} == {m[0] for m in gc.AMP_MODES} - {'fp16'}


@pytest.mark.slow
def test_quick_everything_on_cpu(tmp_path):
    "Every section on CPU in tiny sizes (about 2 minutes on 2 cores): gloo torchrun, the tiny sweep, throughput, workers."
    p = gpu_check(tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    md, js = check_report(tmp_path, ['deps', 'amp', 'ddp', 'sweep', 'throughput', 'dataloader'])
    assert 'gloo' in md and 'paper Table 6' in md


def test_a_failing_section_is_recorded_and_the_rest_run(tmp_path, monkeypatch):
    "A section that raises is a FAIL with its reason; the next section still runs; the budget skips what is left."
    gc = _load('bench/gpu_check.py', 'gpu_check')
    monkeypatch.setenv('TOPOCL_CACHE', str(tmp_path / 'cache'))
    monkeypatch.setitem(gc.FUNCS, 'amp', lambda ctx: 1 / 0)
    monkeypatch.setitem(gc.FUNCS, 'ddp', lambda ctx: dict(rows=[dict(a=1)], notes=['fine']))
    assert gc.main(['--out', str(tmp_path), '--device', 'cpu', '--quick', '--only', 'amp,ddp']) == 1
    js = json.loads((tmp_path / 'gpu_check.json').read_text())
    assert [(s['name'], s['status']) for s in js['sections']] == [('amp', 'fail'), ('ddp', 'pass')]
    assert 'ZeroDivisionError' in js['sections'][0]['reason']
    assert gc.main(['--out', str(tmp_path), '--device', 'cpu', '--quick', '--only', 'ddp', '--budget', '0']) == 0
    s = json.loads((tmp_path / 'gpu_check.json').read_text())['sections'][0]
    assert s['status'] == 'skipped' and 'budget' in s['reason']


def test_a_missing_package_skips_with_the_reason(tmp_path, monkeypatch):
    gc = _load('bench/gpu_check.py', 'gpu_check')
    monkeypatch.setenv('TOPOCL_CACHE', str(tmp_path / 'cache'))
    real = gc.Ctx.have
    monkeypatch.setattr(gc.Ctx, 'have', lambda self, m: m != 'submitit' and real(self, m))
    assert gc.main(['--out', str(tmp_path), '--device', 'cpu', '--quick', '--only', 'sweep']) == 0
    s = json.loads((tmp_path / 'gpu_check.json').read_text())['sections'][0]
    assert s['status'] == 'skipped' and 'submitit' in s['reason']
    assert 'SKIPPED' in (tmp_path / 'gpu_check.md').read_text()


# ------------------------------------------------------------------------------------------------ wheelhouse
def test_wheelhouse_keeps_what_a_gpu_node_lacks():
    "settings.ini's requirements minus the torch stack and what nodes have; the closure follows markers and extras."
    wh = _load('scripts/wheelhouse.py', 'wheelhouse')
    roots = wh.read_requirements(ROOT / 'settings.ini')
    names = {wh.canonicalize_name(wh.Requirement(r).name) for r in roots}
    kept = {n for n in names if not wh.exclusion(n)}
    assert {'gudhi', 'cripser', 'lightly', 'submitit', 'papermill', 'ipykernel', 'medmnist', 'segment-anything',
            'fastcore'} <= kept
    for n in ('torch', 'torchvision', 'nvidia-cudnn-cu12', 'triton', 'numpy', 'scipy', 'pandas', 'scikit-learn',
              'scikit-image', 'matplotlib', 'seaborn', 'tensorboard', 'tqdm', 'PyYAML', 'Pillow'):
        assert wh.exclusion(n), n
    # a fake index: metadata per distribution, as the downloader would read it from each wheel
    index = {
        'lightly': ('1.6.0', ['hydra-core>=1.0', 'numpy', 'torch', 'pytorch_lightning>=1.0', 'timm; extra == "timm"']),
        'hydra-core': ('1.3.2', ['omegaconf<2.4,>=2.2', 'packaging']),
        'omegaconf': ('2.3.0', ['antlr4-python3-runtime==4.9.*', 'PyYAML>=5.1']),
        'antlr4-python3-runtime': ('4.9.3', []), 'packaging': ('24.0', []),
        'pytorch-lightning': ('2.4.0', ['torch>=2.1', 'fsspec[http]>=2022.5', 'typing-extensions', 'nvidia-nccl-cu12']),
        'fsspec': ('2024.6.0', ['aiohttp!=4.0.0a0; extra == "http"', 'pyarrow; extra == "arrow"']),
        'aiohttp': ('3.9.5', ['async-timeout; python_version < "3.11"', 'colorama; sys_platform == "win32"']),
        'typing-extensions': ('4.12', []), 'async-timeout': ('4.0', []),
        'papermill': ('2.6.0', ['tenacity', 'aiohttp>=3.9; python_version == "3.12"']), 'tenacity': ('8.0', []),
    }
    fetched = []
    def fetch(spec):
        n = wh.canonicalize_name(wh.Requirement(spec).name); fetched.append(n); return index[n]
    got, excluded, problems = wh.resolve(['lightly>=1.5,<1.7', 'torch>=2.3', 'numpy>=1.24'], fetch, wh.target_env('3.12'))
    assert set(got) == {'lightly', 'hydra-core', 'omegaconf', 'antlr4-python3-runtime', 'packaging', 'pytorch-lightning',
                        'fsspec', 'aiohttp', 'typing-extensions'}         # the http extra of fsspec brings aiohttp
    assert got['lightly'] == ('lightly<1.7,>=1.5', '1.6.0') and problems == []
    assert {'torch', 'numpy', 'pyyaml', 'nvidia-nccl-cu12'} <= set(excluded) and 'timm' not in got
    assert len(fetched) == len(set(fetched))                             # each distribution is fetched once
    # markers are those of the target: Python 3.10 needs async-timeout, 3.12 does not; papermill's aiohttp only on 3.12
    got310, _, _ = wh.resolve(['papermill', 'fsspec[http]'], fetch, wh.target_env('3.10'))
    assert 'async-timeout' in got310 and 'colorama' not in got310
    got312, _, _ = wh.resolve(['papermill'], fetch, wh.target_env('3.12'))
    assert set(got312) == {'papermill', 'tenacity', 'aiohttp'}
    # a download that fails is reported, not dropped silently
    _, _, problems = wh.resolve(['nowhere-pkg'], lambda s: (_ for _ in ()).throw(RuntimeError('no wheel')), wh.target_env())
    assert problems and 'nowhere-pkg' in problems[0]
