"""Benchmark: calibration of the topology-aware augmentations at 224 px, and the error of its approximate mode.

    python bench/calibration.py [--n 128 --size 224 --n-jobs 2] [--data ../shared/data/medmnist] [--out cal224.json]

1. Calibrates `--n` real PneumoniaMNIST training images, bilinearly upsampled to `--size` px, on their Otsu ROIs,
   with the default operations, combinations and grids, GUDHI's 2-D persistence path and GUDHI's approximate
   bottleneck distance (additive error <= 0.01 in r, see `topocl.persistence.relative_bottleneck`); prints the wall
   time and the ranges chosen per band, and writes the calibration file.
2. The approximation against the exact distance: for `--n-pairs` (image, view) pairs drawn as calibration draws them
   (the combinations' grid points), the exact and approximate r and their largest difference, with the time of
   each; the exact distance of one noisy 224 px pair can take tens of seconds, which is why (1) is approximate.
3. Where the time goes: one image's calibration sweep under cProfile (persistence, bottleneck, augmentation ops).
"""
import argparse, cProfile, json, pstats, sys, time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from topocl.augment import CalibrationSettings, TopoAugment, apply_ops, calibrate  # noqa: E402
from topocl.persistence import PersistenceConfig, relative_bottleneck, roi_range  # noqa: E402
from topocl.roi import compute_rois  # noqa: E402


def load(data, n, size):
    with np.load(Path(data) / 'pneumoniamnist.npz') as z: x = z['train_images'][:n]
    t = torch.from_numpy(x.astype(np.float32))[:, None]
    up = torch.nn.functional.interpolate(t, size=(size, size), mode='bilinear', align_corners=False)[:, 0]
    return up.round().clamp(0, 255).to(torch.uint8).numpy()


def approx_error(cal, xs, ms, n_pairs, seed=0):
    "Exact vs approximate r on views drawn from the calibrated ranges (both bands)."
    p, rng, rows = cal.persistence, np.random.default_rng(seed), []
    augs = [TopoAugment(cal, lv) for lv in cal.bands]
    for k in range(n_pairs):
        i = int(rng.integers(len(xs))); x, m = xs[i].astype(np.float64) / 255, ms[i]
        ops, inten = augs[k % len(augs)].sample(rng)
        y, my = apply_ops(x, m, ops, inten, np.random.default_rng([seed, k]))
        a, b = p.diagram(x, m), p.diagram(y, my)
        scale = roi_range(x, m)
        t0 = time.process_time(); ra = relative_bottleneck(a, b, exact=False, scale=scale)[2]; ta = time.process_time() - t0
        t0 = time.process_time(); re = relative_bottleneck(a, b, exact=True, scale=scale)[2]; te = time.process_time() - t0
        rows.append((re, ra, te, ta, len(a) + len(b)))
        print(f"  pair {k}: {'+'.join(ops):28s} points {len(a) + len(b):6d}  r exact {re:.4f} approx {ra:.4f}  "
              f"|diff| {abs(re - ra):.4f}  time exact {te:7.2f} s approx {ta * 1e3:6.1f} ms", flush=True)
    r = np.array(rows)
    return dict(n_pairs=len(r), max_abs_diff=float(np.abs(r[:, 0] - r[:, 1]).max()),
                exact_s_median=float(np.median(r[:, 2])), approx_ms_median=float(np.median(r[:, 3]) * 1e3))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--n', type=int, default=128)
    ap.add_argument('--size', type=int, default=224)
    ap.add_argument('--n-jobs', type=int, default=2)
    ap.add_argument('--n-pairs', type=int, default=6)
    ap.add_argument('--data', default=str(Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'medmnist'))
    ap.add_argument('--out', default='calibration-bench.json')
    a = ap.parse_args()
    imgs = load(a.data, a.n, a.size)
    ms = compute_rois(imgs, 'otsu', progress=False).masks
    masks = np.stack([ms[i] for i in range(len(imgs))])
    print(f"{len(imgs)} PneumoniaMNIST images at {a.size} px, Otsu ROIs, {a.n_jobs} worker processes", flush=True)

    prof = cProfile.Profile(); prof.enable()
    calibrate(imgs[:1], masks[:1], CalibrationSettings(n_images=1, exact=False, keep_samples=False, n_check=0))
    prof.disable()
    st = pstats.Stats(prof); total = st.total_tt
    share = {}
    for (file, _, fn), (_, _, tt, ct, _) in st.stats.items():
        for name, keys in (('persistence', ('_raw_pairs_many',)), ('bottleneck', ('bottleneck_distance',)),
                           ('augmentation ops', ('apply_ops',))):
            if fn in keys: share[name] = share.get(name, 0) + ct
    print(f"one image's sweep: {total:.2f} s CPU; " + ', '.join(f"{k} {v / total:.0%}" for k, v in share.items()), flush=True)

    t0 = time.perf_counter()
    cal = calibrate(imgs, masks, CalibrationSettings(n_images=a.n, exact=False), PersistenceConfig(), n_jobs=a.n_jobs,
                    meta=dict(dataset='pneumoniamnist', split='train', size=a.size, roi='otsu'))
    wall = time.perf_counter() - t0
    cal.save(a.out)
    print(f"calibration of {a.n} images at {a.size} px: {wall:.0f} s wall ({wall / 60:.1f} min) on {a.n_jobs} workers", flush=True)
    for lv in cal.bands:
        adm = cal.admissible(lv)
        print(f"  {lv} band {cal.bands[lv]}: {len(adm)} admissible combinations")
        for ops, rg in adm: print(f"    {'+'.join(ops):28s} " + ', '.join(f"{op} [{lo:.4g}, {hi:.4g}]" for op, (lo, hi) in rg.items()))
    print("exact vs approximate r on calibrated views:", flush=True)
    res = approx_error(cal, imgs, masks, a.n_pairs)
    print(json.dumps(dict(wall_s=round(wall, 1), n=a.n, size=a.size, n_jobs=a.n_jobs, **res), indent=1))


if __name__ == '__main__':
    main()
