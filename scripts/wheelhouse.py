"""A wheelhouse of what a GPU node usually lacks, for an offline install there.

    python scripts/wheelhouse.py --out wheelhouse                      # Python 3.12, manylinux 2014/2_28 x86_64, <= 64 MiB
    python scripts/wheelhouse.py --out wheelhouse --python 3.11 --platform manylinux_2_28_x86_64
    python scripts/wheelhouse.py --out wheelhouse --dry-run            # what would be kept and excluded, no downloads

GPU nodes bring their own torch stack (torch, torchvision, triton, nvidia-*) and the common scientific packages
(numpy, scipy, pandas, scikit-learn, scikit-image, matplotlib, seaborn, tensorboard, tqdm, pyyaml, and pillow, which
torchvision needs). What they usually lack are the project's other requirements (settings.ini `requirements`: gudhi,
cripser, lightly, segment-anything, medmnist, fastcore, submitit, joblib), papermill and ipykernel (which the sweep's
papermill runner needs; from `dev_requirements`), and the dependencies of these. This script resolves that closure for
the target Python and platform from each wheel's own metadata (markers and extras evaluated for the target, excluded
packages not followed), downloads each distribution with
`pip download --only-binary=:all: --python-version X --platform P --no-deps` (a pure-Python distribution published
only as an sdist, like antlr4-python3-runtime 4.9.3 which omegaconf pins, is built into its py3-none-any wheel here),
adds the project's own wheel (`pip wheel --no-deps .`), checks that the total stays under --max-mib and prints the
offline install command:

    pip install --no-index --find-links wheelhouse topocl papermill ipykernel
"""
from __future__ import annotations
import argparse, configparser, email.parser, re, shlex, shutil, subprocess, sys, tempfile, zipfile
from pathlib import Path

try: from packaging.requirements import Requirement; from packaging.utils import canonicalize_name
except ImportError:  # pip vendors packaging
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
TORCH_STACK = {'torch', 'torchvision', 'torchaudio', 'triton', 'pytorch-triton'}
TORCH_PREFIXES = ('nvidia-', 'cuda-')   # nvidia-cudnn-cu12, cuda-toolkit, cuda-bindings...: torch's CUDA wheels
NODE_HAS = {'numpy', 'scipy', 'pandas', 'scikit-learn', 'scikit-image', 'matplotlib', 'seaborn', 'tensorboard', 'tqdm',
            'pyyaml', 'pillow'}   # pillow: torchvision requires it
DEFAULT_PLATFORMS = ['manylinux2014_x86_64', 'manylinux_2_28_x86_64']
DEV_NEEDED = {'papermill', 'ipykernel'}   # from dev_requirements: the sweep's papermill runner and its python3 kernel


def exclusion(name:str)->str|None:
    "Why a distribution is left out of the wheelhouse (None: it is kept)."
    n = canonicalize_name(name)
    if n in TORCH_STACK or n.startswith(TORCH_PREFIXES): return 'the GPU node brings its own torch stack'
    if n in NODE_HAS: return 'the GPU node has it'
    return None


def read_requirements(settings=ROOT / 'settings.ini')->list:
    "settings.ini's `requirements`, plus the `dev_requirements` a GPU run needs (papermill, ipykernel)."
    cp = configparser.ConfigParser(); cp.read(settings)
    d = cp['DEFAULT']
    reqs = d.get('requirements', '').split()
    reqs += [r for r in d.get('dev_requirements', '').split() if canonicalize_name(Requirement(r).name) in DEV_NEEDED]
    if not any(canonicalize_name(Requirement(r).name) == 'ipykernel' for r in reqs): reqs.append('ipykernel')
    return reqs


def target_env(python:str='3.12', platform:str='manylinux2014_x86_64')->dict:
    "The PEP 508 marker environment of the target interpreter."
    machine = 'x86_64' if platform.endswith('x86_64') else 'aarch64' if platform.endswith('aarch64') else platform.rsplit('_', 1)[-1]
    system = 'Linux' if 'linux' in platform else 'Darwin' if platform.startswith('macosx') else 'Windows'
    return dict(python_version='.'.join(python.split('.')[:2]), python_full_version=python if python.count('.') == 2 else python + '.0',
                sys_platform={'Linux': 'linux', 'Darwin': 'darwin', 'Windows': 'win32'}[system], platform_system=system,
                platform_machine=machine, os_name='nt' if system == 'Windows' else 'posix', implementation_name='cpython',
                platform_python_implementation='CPython', platform_release='', platform_version='', implementation_version=python)


def applies(req:Requirement, env:dict, extras=())->bool:
    "Whether a Requires-Dist line holds on the target, given the extras asked of the package that declares it."
    if req.marker is None: return True
    return any(req.marker.evaluate({**env, 'extra': e}) for e in ('', *extras))


def resolve(roots:list, fetch, env:dict):
    """The closure of `roots` (requirement strings) to put in the wheelhouse.
    `fetch(requirement_string) -> (version, requires_dist lines)` gives one distribution's metadata (it downloads it);
    returns (kept: {name: (requirement string, version)}, excluded: {name: reason}, problems: [str])."""
    kept, excluded, problems, extras_done = {}, {}, [], {}
    queue = [(Requirement(r), ()) for r in roots]
    while queue:
        req, _ = queue.pop(0)
        name = canonicalize_name(req.name)
        if why := exclusion(name): excluded.setdefault(name, why); continue
        extras = tuple(sorted(req.extras))
        if name in kept:
            spec, version, requires = kept[name]
            if version and req.specifier and not req.specifier.contains(version, prereleases=True):
                problems.append(f"{name} {version} was chosen but something also asks for {req}")
            if set(extras) - set(extras_done[name]):   # new extras bring new dependencies
                extras_done[name] = tuple(sorted(set(extras) | set(extras_done[name])))
                queue += [(d, ()) for d in _deps(requires, env, extras)]
            continue
        spec = f"{name}{req.specifier}" if req.specifier else name
        try: version, requires = fetch(spec)
        except Exception as e:
            problems.append(f"{spec}: {e}"); kept[name] = (spec, None, []); extras_done[name] = extras; continue
        kept[name] = (spec, version, list(requires)); extras_done[name] = extras
        queue += [(d, ()) for d in _deps(requires, env, extras)]
    return {k: v[:2] for k, v in kept.items()}, excluded, problems


def _deps(requires, env, extras):
    out = []
    for line in requires:
        r = Requirement(line)
        if applies(r, env, extras): out.append(r)
    return out


def wheel_metadata(path:Path):
    "(version, Requires-Dist lines) of a wheel file."
    with zipfile.ZipFile(path) as z:
        meta = next(n for n in z.namelist() if re.fullmatch(r'[^/]+\.dist-info/METADATA', n))
        msg = email.parser.Parser().parsestr(z.read(meta).decode('utf-8', 'replace'))
    return msg['Version'], msg.get_all('Requires-Dist') or []


def wheel_name(path:Path)->str: return canonicalize_name(path.name.split('-')[0])


class Downloader:
    "`pip download --no-deps` of one requirement for the target; returns its metadata."
    def __init__(self, out:Path, python:str, platforms:list, pip=(sys.executable, '-m', 'pip')):
        self.out, self.python, self.platforms, self.pip = out, python, platforms, list(pip)
    def __call__(self, spec:str):
        name = canonicalize_name(Requirement(spec).name)
        cmd = [*self.pip, 'download', '--only-binary=:all:', '--no-deps', '--python-version', self.python,
               '--implementation', 'cp', *[f'--platform={p}' for p in self.platforms], '-d', str(self.out), spec]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            last = [l for l in (p.stderr or p.stdout).strip().splitlines() if l.strip()][-1:] or ['(no output)']
            try: return self.pure_wheel(spec)
            except RuntimeError as e: raise RuntimeError(f"pip download failed: {last[0]}; {e}") from None
        saved = re.findall(r'(?:Saved|File was already downloaded) (\S+\.whl)', p.stdout)
        files = [Path(s) if Path(s).is_absolute() else self.out / Path(s).name for s in saved]
        files = [f for f in files if wheel_name(f) == name] or sorted(
            (f for f in self.out.glob('*.whl') if wheel_name(f) == name), key=lambda f: f.stat().st_mtime)[-1:]
        if not files: raise RuntimeError(f"pip download saved no wheel for {spec}")
        print(f"  {files[-1].name} ({files[-1].stat().st_size / 2**20:.2f} MiB)", flush=True)
        return wheel_metadata(files[-1])

    def pure_wheel(self, spec:str):
        "An sdist-only distribution (e.g. antlr4-python3-runtime 4.9.3, pinned by omegaconf): built here, kept if pure Python."
        with tempfile.TemporaryDirectory() as tmp:
            p = subprocess.run([*self.pip, 'wheel', '--no-deps', '-w', tmp, spec], capture_output=True, text=True)
            built = list(Path(tmp).glob('*.whl'))
            if p.returncode != 0 or not built: raise RuntimeError('no wheel could be built from its sdist either')
            if not built[0].name.endswith('-none-any.whl'):
                raise RuntimeError(f"its sdist builds {built[0].name}, not pure Python: it needs a wheel for the target")
            dest = self.out / built[0].name
            shutil.move(str(built[0]), dest)
        print(f"  {dest.name} ({dest.stat().st_size / 2**20:.2f} MiB; built from the sdist, pure Python)", flush=True)
        return wheel_metadata(dest)


def main(argv=None)->int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--out', required=True, help='the wheelhouse folder')
    ap.add_argument('--python', default='3.12', help="the GPU node's Python (default 3.12)")
    ap.add_argument('--platform', action='append', default=None,
                    help='wheel platform tag, may be repeated (default: manylinux2014_x86_64 and manylinux_2_28_x86_64: '
                         "cripser publishes manylinux_2_28 wheels only, and torch's own wheels need glibc 2.28 anyway)")
    ap.add_argument('--max-mib', type=float, default=64, help='fail if the wheelhouse is larger (default 64)')
    ap.add_argument('--dry-run', action='store_true', help='list the roots and what is excluded; download nothing')
    a = ap.parse_args(argv)
    platforms = a.platform or DEFAULT_PLATFORMS
    out = Path(a.out); env = target_env(a.python, platforms[0])
    roots = read_requirements()
    keep = [r for r in roots if not exclusion(Requirement(r).name)]
    print(f"target: Python {a.python}, {', '.join(platforms)}")
    print(f"requirements kept: {' '.join(keep)}")
    print(f"excluded: {' '.join(r for r in roots if exclusion(Requirement(r).name))}")
    if a.dry_run: return 0
    out.mkdir(parents=True, exist_ok=True)
    print('downloading the closure (each wheel with --no-deps, dependencies read from its metadata):')
    kept, excluded, problems = resolve(keep, Downloader(out, a.python, platforms), env)
    print('building the project wheel: pip wheel --no-deps .')
    p = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '-w', str(out), str(ROOT)], capture_output=True, text=True)
    if p.returncode != 0: problems.append(f"pip wheel . failed: {(p.stderr or p.stdout)[-800:]}")
    wheels = sorted(out.glob('*.whl'), key=lambda f: -f.stat().st_size)
    total = sum(f.stat().st_size for f in wheels) / 2**20
    print(f"\n{len(wheels)} wheels, {total:.1f} MiB in {out} (limit {a.max_mib:g} MiB); largest: "
          + ', '.join(f"{f.name.split('-')[0]} {f.stat().st_size / 2**20:.1f}" for f in wheels[:5]))
    print(f"not included ({len(excluded)}): " + ', '.join(f"{k} ({v})" for k, v in sorted(excluded.items())))
    for msg in problems: print(f"PROBLEM: {msg}", file=sys.stderr)
    if total > a.max_mib:
        print(f"ERROR: the wheelhouse is {total:.1f} MiB, over --max-mib {a.max_mib:g}: drop a requirement or raise the limit",
              file=sys.stderr)
        return 1
    if problems: return 1
    print(f"\nOn the GPU node (with its own torch), offline:\n  pip install --no-index --find-links {shlex.quote(str(out))} topocl"
          f"\n(papermill and ipykernel, for the sweep's papermill runner, are dev requirements: add them to the command:\n"
          f"  pip install --no-index --find-links {shlex.quote(str(out))} topocl papermill ipykernel)")
    return 0


if __name__ == '__main__':
    sys.exit(main())
