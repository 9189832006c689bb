"""Benchmark: `topocl screen` per data set, end to end and per stage, against its time target.

    python bench/screen.py [--data DIR] [--reps 1] [--only breastmnist-28 ...]

Each data set runs as a user runs it: `topocl screen --dataset NAME --size S --out-dir TMP` in a fresh process
(so Python's and torch's import is counted), with the defaults (all images, Otsu ROI, 1000 bootstrap resamples,
2000 permutations). It prints the wall-clock seconds, the seconds of each stage as `screen.json` records them
(load, ROI, diagrams, features, fit, test = bootstrap + permutation test, figure, write; `start` is the rest:
interpreter start-up and imports), and the ratio of the wall time to the target (below 1 meets it):
BreastMNIST (780 images) in 1 minute and PneumoniaMNIST (5856 images) in 3 minutes on 2 cores. BreastMNIST at
64 px is held to the 28 px target. The synthetic set (2800 images) has no target; it is timed for reference.
Real data come from --data (default: $TOPOCL_DATA, else the shared data folder beside the checkout); a data set
whose file is absent is reported as skipped. With --reps N each run is repeated and the fastest kept (the
machine may be shared: the load average is printed).
"""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = {  # name -> (dataset, size, file under --data or None, target seconds or None)
    'synthetic-28': ('synthetic', 28, None, None),
    'breastmnist-28': ('breastmnist', 28, 'breastmnist.npz', 60),
    'breastmnist-64': ('breastmnist', 64, 'breastmnist_64.npz', 60),
    'pneumoniamnist-28': ('pneumoniamnist', 28, 'pneumoniamnist.npz', 180),
}
STAGES = ('start', 'load', 'roi', 'diagrams', 'features', 'fit', 'test', 'figure', 'write')


def run_once(dataset, size, data):
    "Wall seconds of one `topocl screen` in a fresh process, and its screen.json."
    with tempfile.TemporaryDirectory() as d:
        cmd = [sys.executable, '-m', 'topocl.cli', 'screen', '--dataset', dataset, '--size', str(size), '--out-dir', d]
        if dataset != 'synthetic': cmd += ['--root', str(data)]
        t = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - t
        if r.returncode != 0: raise SystemExit(f'{" ".join(cmd)} failed:\n{r.stderr[-3000:]}')
        summary = json.loads((Path(d) / 'screen.json').read_text())
    summary['seconds']['start'] = wall - sum(summary['seconds'].values())
    return wall, summary


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--data', default=os.environ.get('TOPOCL_DATA', str(ROOT.parent / 'shared' / 'data' / 'medmnist')))
    ap.add_argument('--reps', type=int, default=1, help='runs per data set; the fastest is kept')
    ap.add_argument('--only', nargs='+', choices=list(RUNS), default=list(RUNS))
    args = ap.parse_args()
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    print(f'cores: {ncpu}; OMP_NUM_THREADS={os.environ.get("OMP_NUM_THREADS", "unset")}; '
          f'load average now: {os.getloadavg()[0]:.2f}; best of {args.reps}')
    print(f"{'data set':>18} {'images':>6} | {'wall s':>6} | " + ' '.join(f'{s:>8}' for s in STAGES) +
          f" | {'target':>6} | {'ratio':>5} | pixels AUC | topology AUC | +topology AUC (p)")
    failed = False
    for name in args.only:
        dataset, size, fname, target = RUNS[name]
        if fname and not (Path(args.data) / fname).exists():
            print(f'{name:>18}: {Path(args.data) / fname} absent, skipped'); continue
        wall, s = min((run_once(dataset, size, args.data) for _ in range(args.reps)), key=lambda r: r[0])
        t = {r['features']: r for r in s['table']}
        c = next(r for r in s['comparisons'] if r['treatment'] == 'pixels+topology' and r['metric'] == 'auc')
        ratio = wall / target if target else float('nan')
        failed |= ratio > 1
        print(f"{name:>18} {sum(s['info']['images'].values()):>6} | {wall:>6.1f} | " +
              ' '.join(f"{s['seconds'].get(k, 0):>8.2f}" for k in STAGES) +
              f" | {target or '-':>6} | {f'{ratio:.2f}' if target else '-':>5} | {t['pixels']['auc']:>10.3f} | {t['topology']['auc']:>12.3f} | "
              f"{c['diff']:+.3f} (p = {c['p']:.2g})")
    print('\nratio = wall seconds / target seconds (below 1 meets the target)')
    if failed: print('A TARGET WAS MISSED'); sys.exit(1)


if __name__ == '__main__':
    main()
