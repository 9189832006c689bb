"""Benchmark: a plain per-image GUDHI loop vs `topocl.persistence.compute_diagrams`, on the same images.

    python bench/persistence.py [--n28 2000 --n64 400 --n224 80] [--data ../shared/data/medmnist] [--synthetic]

For each size (28, 64, 224 px) it times, in this one run:
  - baseline: `gudhi.CubicalComplex(top_dimensional_cells=...)` per image in a Python loop (what the authors' pipeline does),
  - `compute_diagrams(..., backend='cripser', n_jobs=<all cores>)` with the worker pool already started
    (the one-time pool start-up is timed and printed separately),
  - for reference, a one-process cripser loop (`n_jobs=1`), to separate backend speed from parallelism,
prints images/s and ratios to the baseline, and checks that all diagrams are identical.
The machine may be shared: the three are run alternately `--reps` times and the best of each is kept, and
the one-process variants also report CPU time per image (process_time), which other users' load does not change.
Then it prints the per-image cost of `cubical_persistence` + `diagram_tokens` (one process, one thread),
the cost the training loop pays per diagram when it computes them on the fly, measured in fresh processes
with glibc's default malloc settings and after `tune_malloc()`.
Images: real PneumoniaMNIST (28 px; bilinearly upsampled to 64 and 224) when the file is there, else synthetic.
"""
import argparse, os, sys, time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from topocl.persistence import (Diagram, DiagramSet, compute_diagrams, cubical_persistence, diagram_tokens,  # noqa: E402
                                tune_malloc)


def load_images(n, data, synthetic):
    f = Path(data) / 'pneumoniamnist.npz'
    if not synthetic and f.exists():
        with np.load(f) as z: x = z['train_images']
        reps = -(-n // len(x))
        return np.concatenate([x] * reps)[:n], f'real PneumoniaMNIST ({f})'
    rng = np.random.default_rng(0)
    from scipy.ndimage import gaussian_filter
    x = np.stack([gaussian_filter(rng.random((28, 28)), 1.2) for _ in range(n)])
    x = (x - x.min((1, 2), keepdims=True)) / np.ptp(x, (1, 2), keepdims=True)
    return (x * 255).astype(np.uint8), 'synthetic (smoothed noise; real data not found or --synthetic)'


def resize(x, size):
    if size == x.shape[1]: return x
    out = []
    for i in range(0, len(x), 256):   # in chunks to bound memory
        t = torch.from_numpy(x[i:i + 256].astype(np.float32))[:, None]
        t = torch.nn.functional.interpolate(t, size=(size, size), mode='bilinear', align_corners=False)[:, 0]
        out.append(t.round().clamp(0, 255).to(torch.uint8).numpy())
    return np.concatenate(out)


def gudhi_loop(imgs):
    import gudhi
    out = []
    for x in imgs:
        f = x.astype(np.float64) / 255.0
        cc = gudhi.CubicalComplex(top_dimensional_cells=f)
        cc.compute_persistence()
        out.append((cc.persistence_intervals_in_dimension(0), cc.persistence_intervals_in_dimension(1), f.max()))
    return out


def as_diagrams(raw):
    "The baseline's raw GUDHI intervals with the engine's conventions (clamped essential bar, no zero-length points)."
    out = []
    for h0, h1, fmax in raw:
        h0 = np.asarray(h0, np.float64).reshape(-1, 2).copy(); h1 = np.asarray(h1, np.float64).reshape(-1, 2)
        ess = np.isinf(h0[:, 1]); h0[ess, 1] = fmax
        out.append(Diagram(h0[ess | (h0[:, 1] > h0[:, 0])], h1[h1[:, 1] > h1[:, 0]]).canonical())
    return out


def timed(fn, *a, **k):
    t = time.perf_counter(); r = fn(*a, **k); return r, time.perf_counter() - t


def timed_cpu(fn, *a, **k):
    t, c = time.perf_counter(), time.process_time(); r = fn(*a, **k)
    return r, time.perf_counter() - t, time.process_time() - c


def per_image_cost(imgs, tune):
    "Mean wall and CPU seconds per image of diagram + tokens, of superlevel, of tokens alone; run in a fresh process."
    import resource
    torch.set_num_threads(1)
    if tune: tune_malloc()
    for x in imgs[:3]: diagram_tokens(cubical_persistence(x))   # warm-up: imports, first allocations
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t, c = time.perf_counter(), time.process_time()
    for x in imgs: diagram_tokens(cubical_persistence(x))
    w_sub, c_sub = (time.perf_counter() - t) / len(imgs), (time.process_time() - c) / len(imgs)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / len(imgs)
    c = time.process_time()
    for x in imgs: diagram_tokens(cubical_persistence(x, superlevel=True))
    c_sup = (time.process_time() - c) / len(imgs)
    ds = [cubical_persistence(x) for x in imgs]
    c = time.process_time()
    for d in ds: diagram_tokens(d)
    return w_sub, c_sub, c_sup, (time.process_time() - c) / len(imgs), faults, float(np.mean([len(d) for d in ds]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--n28', type=int, default=2000)
    ap.add_argument('--n64', type=int, default=400)
    ap.add_argument('--n224', type=int, default=40)
    ap.add_argument('--reps', type=int, default=3)
    ap.add_argument('--data', default=os.environ.get('TOPOCL_DATA', str(Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'medmnist')))
    ap.add_argument('--synthetic', action='store_true')
    args = ap.parse_args()
    torch.set_num_threads(1)
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    base, src = load_images(max(args.n28, args.n64, args.n224), args.data, args.synthetic)
    print(f'images: {src}; cores: {ncpu}; load average now: {os.getloadavg()[0]:.2f}')

    _, t_start = timed(compute_diagrams, base[:4], n_jobs=ncpu, chunk_size=1, progress=False)
    print(f'worker pool start-up (once per session, excluded below): {t_start:.2f} s\n')

    print(f'best of {args.reps} alternating runs; images/s (wall); ratio = x the GUDHI loop; cpu = CPU ms per image in one process')
    print(f"{'size':>5} {'n':>5} | {'GUDHI loop':>19} | {'engine, 1 process':>28} | {'engine, all cores':>20} | identical")
    ok = True
    for size, n in ((28, args.n28), (64, args.n64), (224, args.n224)):
        imgs = resize(base[:n], size)
        tg = t1 = tp = cg = c1 = float('inf')
        for _ in range(args.reps):
            raw, t, c = timed_cpu(gudhi_loop, imgs); tg, cg = min(tg, t), min(cg, c)
            one, t, c = timed_cpu(compute_diagrams, imgs, n_jobs=1, progress=False); t1, c1 = min(t1, t), min(c1, c)
            par, t = timed(compute_diagrams, imgs, n_jobs=ncpu, progress=False); tp = min(tp, t)
            ref = DiagramSet.from_diagrams(as_diagrams(raw))
            same = (one == ref) and (par == ref)
            ok &= same
        print(f'{size:>5} {n:>5} | {n / tg:>5.0f} i/s cpu {cg / n * 1e3:>5.2f} | {n / t1:>5.0f} i/s {tg / t1:>5.1f}x cpu {c1 / n * 1e3:>5.2f} ({cg / c1:>4.1f}x) | '
              f'{n / tp:>6.0f} i/s {tg / tp:>6.1f}x | {same}')

    print('\nper image, fresh process, one thread; CPU ms (wall ms in brackets); training computes two diagrams per image:')
    import multiprocessing as mp
    ctx = mp.get_context('spawn')
    for size, n in ((28, 500), (64, 200), (224, 40)):
        imgs = resize(base[:n], size)
        for tune in (False, True):
            with ctx.Pool(1) as pool: w_sub, c_sub, c_sup, c_tok, faults, pts = pool.apply(per_image_cost, (imgs, tune))
            print(f'  {size:>3} px, {"tune_malloc()  " if tune else "default malloc "}: cubical_persistence + diagram_tokens '
                  f'{c_sub * 1e3:6.2f} ms ({w_sub * 1e3:6.2f}), superlevel {c_sup * 1e3:6.2f} ms, tokens alone {c_tok * 1e3:.3f} ms; '
                  f'{faults:5.0f} page faults/image; {pts:.0f} points')
    if not ok:
        print('DIAGRAMS DIFFER'); sys.exit(1)


if __name__ == '__main__':
    main()
