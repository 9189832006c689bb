"""Benchmark: persistence diagrams of real images, GUDHI's 2-D path (the default) against the generic GUDHI loop and cripser.

    python bench/persistence.py [--n28 2000 --n64 400 --n224 200] [--reps 3] [--data ../shared/data/medmnist] [--synthetic]

For each size (28, 64, 224 px; real PneumoniaMNIST, bilinearly upsampled; each image on its Otsu ROI) it times, in this one run:
  - baseline: `gudhi.CubicalComplex(top_dimensional_cells=...)` + `compute_persistence` per image in a Python loop
    (the generic complex, what the authors' pipeline does),
  - the raw fast-path call `gudhi._pers_cub_low_dim_ext._persistence_on_rectangle_from_top_cells` per image
    (a private GUDHI function: the floor any wrapper can reach, timed as a reference only),
  - `compute_diagrams(backend='cripser', engine=EngineSettings(n_jobs=1))`, the previous default,
  - `compute_diagrams()` (GUDHI's 2-D path through its public `CubicalPersistence`) in one process and on all
    cores (the worker pool started before timing; its start-up is printed separately),
prints CPU ms per image (one process; other users' load does not change it), images/s on all cores, ratios to the
baseline, and checks that all diagrams are identical. The machine may be shared: the variants run alternately
`--reps` times and the best of each is kept.
Then, in a fresh one-thread process per size, the cost the training loop pays per view: `TokenMaker.view(image, roi)`
(filtration, diagram and tokens, what `ViewDataset` calls in DataLoader workers) against the raw fast-path call on
the same filtration, and the same with cripser.
"""
import argparse, os, sys, time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from topocl.persistence import (Diagram, DiagramSet, EngineSettings, PersistenceConfig, TokenMaker, compute_diagrams,  # noqa: E402
                                filtration_values)
from topocl.roi import compute_rois  # noqa: E402


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


def gudhi_loop(fs):
    import gudhi
    out = []
    for f in fs:
        cc = gudhi.CubicalComplex(top_dimensional_cells=f)
        cc.compute_persistence()
        out.append((cc.persistence_intervals_in_dimension(0), cc.persistence_intervals_in_dimension(1), f.max()))
    return out


def raw_loop(fs):
    from gudhi._pers_cub_low_dim_ext import _persistence_on_rectangle_from_top_cells as rect
    return [rect(f, 0.0) for f in fs]


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


def view_cost(imgs, masks, reps=5):
    """CPU seconds per view of `TokenMaker.views` on a sample's two views (float32, as `TopoAugment` makes them; gudhi-2d
    and cripser) and of the raw fast-path call on the same filtrations; in a fresh one-thread process."""
    torch.set_num_threads(1)
    views = [x.astype(np.float32) / 255 for x in imgs]
    pairs = [[(views[i], masks[i]), (views[-1 - i], masks[-1 - i])] for i in range(len(imgs))]
    makers = {b: TokenMaker(PersistenceConfig(backend=b)) for b in ('gudhi-2d', 'cripser')}
    fs = [filtration_values(x, m) for x, m in zip(views, masks)]
    for mk in makers.values():
        for p in pairs[:3]: mk.views(p)   # warm-up: imports, first allocations, tune_malloc
    raw_loop(fs[:3])
    out = {}
    for _ in range(reps):
        for b, mk in makers.items():
            c = time.process_time()
            for p in pairs: mk.views(p)
            out[b] = min(out.get(b, 1e9), (time.process_time() - c) / (2 * len(pairs)))
        c = time.process_time(); raw_loop(fs); out['raw'] = min(out.get('raw', 1e9), (time.process_time() - c) / len(fs))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--n28', type=int, default=2000)
    ap.add_argument('--n64', type=int, default=400)
    ap.add_argument('--n224', type=int, default=200)
    ap.add_argument('--reps', type=int, default=3)
    ap.add_argument('--data', default=os.environ.get('TOPOCL_DATA', str(Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'medmnist')))
    ap.add_argument('--synthetic', action='store_true')
    args = ap.parse_args()
    torch.set_num_threads(1)
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    base, src = load_images(max(args.n28, args.n64, args.n224), args.data, args.synthetic)
    print(f'images: {src}, each on its Otsu ROI; cores: {ncpu}; load average now: {os.getloadavg()[0]:.2f}')

    _, t_start = timed(compute_diagrams, base[:4], engine=EngineSettings(n_jobs=ncpu, chunk_size=1, progress=False))
    print(f'worker pool start-up (once per session, excluded below): {t_start:.2f} s\n')

    print(f'best of {args.reps} alternating runs; CPU ms per image in one process (x = speed-up over the generic GUDHI loop)')
    print(f"{'size':>5} {'n':>5} | {'generic GUDHI':>13} | {'cripser':>14} | {'raw fast path':>14} | {'gudhi-2d, 1 proc':>16} | "
          f"{'gudhi-2d, all cores (wall)':>26} | identical")
    ok, rows = True, {}
    for size, n in ((28, args.n28), (64, args.n64), (224, args.n224)):
        imgs = resize(base[:n], size)
        masks = compute_rois(imgs, 'otsu', progress=False).masks
        mk = np.stack([masks[i] for i in range(n)])
        fs = [filtration_values(x, m) for x, m in zip(imgs, mk)]
        best = dict(g=np.inf, c=np.inf, r=np.inf, one=np.inf, par=np.inf)
        for _ in range(args.reps):
            raw, _, c = timed_cpu(gudhi_loop, fs); best['g'] = min(best['g'], c)
            cri, _, c = timed_cpu(compute_diagrams, imgs, mk, backend='cripser', engine=EngineSettings(n_jobs=1, progress=False)); best['c'] = min(best['c'], c)
            _, _, c = timed_cpu(raw_loop, fs); best['r'] = min(best['r'], c)
            one, _, c = timed_cpu(compute_diagrams, imgs, mk, engine=EngineSettings(n_jobs=1, progress=False)); best['one'] = min(best['one'], c)
            par, t = timed(compute_diagrams, imgs, mk, engine=EngineSettings(n_jobs=ncpu, progress=False)); best['par'] = min(best['par'], t)
            ref = DiagramSet.from_diagrams(as_diagrams(raw))
            same = one == ref and par == ref and cri == ref
            ok &= same
        ms = {k: v / n * 1e3 for k, v in best.items()}
        x = {k: best['g'] / v for k, v in best.items()}
        print(f"{size:>5} {n:>5} | {ms['g']:>10.3f} ms | {ms['c']:>6.3f} ({x['c']:>4.1f}x) | {ms['r']:>6.3f} ({x['r']:>4.0f}x) | "
              f"{ms['one']:>7.3f} ({x['one']:>4.0f}x) | {n / best['par']:>6.0f} img/s ({x['par']:>4.0f}x)    | {same}")
        rows[size] = (imgs, mk)

    print('\nper view in the training loop (fresh process, one thread, CPU us; best of 5): TokenMaker.views of a sample\'s two views')
    print('against the raw fast-path call on the same filtration, on the Otsu ROI and on the whole image (visual-view controls)')
    import multiprocessing as mp
    ctx = mp.get_context('spawn')
    for size, n in ((28, 500), (64, 200), (224, 40)):
        imgs, mk = rows[size]
        for roi, m in (('Otsu ROI', mk[:n]), ('whole image', np.ones_like(mk[:n]))):
            with ctx.Pool(1) as pool: c = pool.apply(view_cost, (imgs[:n], m))
            print(f"  {size:>3} px, {roi:>11}: raw call {c['raw'] * 1e6:7.1f} us | TokenMaker.views gudhi-2d {c['gudhi-2d'] * 1e6:7.1f} us "
                  f"({c['gudhi-2d'] / c['raw']:.2f}x raw) | cripser {c['cripser'] * 1e6:7.1f} us ({c['cripser'] / c['raw']:.2f}x raw)")
    if not ok:
        print('DIAGRAMS DIFFER'); sys.exit(1)


if __name__ == '__main__':
    main()
