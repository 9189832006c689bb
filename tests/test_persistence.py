"""Integration tests for topocl.persistence: real data, backends, parallel/memmap engine, cache, DataLoader, bad input."""
import json, os, warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from topocl.persistence import (BACKENDS, Diagram, DiagramSet, EngineSettings, area_downsample, cache_path, collate_tokens,
                                compute_diagrams, cubical_persistence, diagram_range, diagram_tokens,
                                diagrams_cache_key, diagrams_of_filtrations, filtration_values,
                                multiscale_persistence, relative_bottleneck,
                                PersistenceConfig, TokenMaker)
from topocl.data import as_float_image

DATA = Path(__file__).resolve().parents[1] / '..' / 'shared' / 'data' / 'medmnist'
DATA = Path(os.environ.get('TOPOCL_DATA', DATA))


def real_images(name='breastmnist', n=120, split='train_images'):
    f = DATA / f'{name}.npz'
    if not f.exists(): pytest.skip(f'real MedMNIST data not found at {f} (set TOPOCL_DATA)')
    with np.load(f) as z: return z[split][:n]


def upsample(imgs, size):
    t = torch.from_numpy(imgs.astype(np.float32))[:, None]
    up = torch.nn.functional.interpolate(t, size=(size, size), mode='bilinear', align_corners=False)[:, 0]
    return up.round().clamp(0, 255).to(torch.uint8).numpy()


def same(a: Diagram, b: Diagram):
    return np.array_equal(a.h0, b.h0) and np.array_equal(a.h1, b.h1)


# ---- backends agree ------------------------------------------------------------------------------

def agree(x, m=None, superlevel=False, backends=BACKENDS):
    "The diagram of `x` if every backend gives exactly the same one; AssertionError naming the odd one otherwise."
    ref, *rest = (cubical_persistence(x, m, superlevel, backend=be) for be in backends)
    for be, d in zip(backends[1:], rest): assert same(ref, d), f'{be} differs from {backends[0]}'
    return ref


@pytest.mark.parametrize('superlevel', [False, True])
def test_backends_identical_on_real_images(superlevel):
    imgs = real_images(n=60)
    rng = np.random.default_rng(1)
    for i, x in enumerate(imgs):
        m = None if i % 2 else rng.random(x.shape) < 0.8
        agree(x, m, superlevel)


def test_backends_identical_on_random_nonsquare_masked():
    rng = np.random.default_rng(2)
    for i in range(80):
        h, w = rng.integers(1, 70, size=2)
        x = rng.integers(0, 256, (h, w), dtype=np.uint8) if i % 2 else rng.random((h, w))
        if i % 5 == 0: x = np.round(x / (x.max() or 1) * 3) / 3 if x.dtype != np.uint8 else x // 64 * 64   # heavy ties
        m = rng.random((h, w)) < rng.uniform(0.2, 1.0) if i % 3 else None
        agree(x, m, bool(i % 4 == 1))


@pytest.mark.parametrize('size', [28, 64, 224])
@pytest.mark.parametrize('superlevel', [False, True])
def test_backends_identical_real_sizes_with_roi(size, superlevel):
    "Real images at 28, 64 and 224 px, whole and inside a disc-shaped ROI, both filtrations: one diagram."
    imgs = upsample(real_images('pneumoniamnist', n=3), size) if size != 28 else real_images('pneumoniamnist', n=6)
    yy, xx = np.mgrid[:size, :size]
    roi = np.hypot(yy - size / 2, xx - size / 2) < 0.4 * size
    slow = ('gudhi-2d', 'cripser') if size == 224 else BACKENDS   # the generic complex: ~0.1 s per 224 px image
    for x in imgs:
        for m in (None, roi):
            d = agree(x, m, superlevel, slow)
            assert len(d.h1) > 0 and len(d.h0) > 1
    if size == 224: agree(imgs[0], roi, superlevel)   # and once with the generic complex too


def test_batched_fast_path_equals_one_by_one():
    "`diagrams_of_filtrations` hands GUDHI a list of images at once; each diagram is the one it gets alone."
    imgs = upsample(real_images(n=5), 64)
    fs = [filtration_values(x) for x in imgs] + [filtration_values(imgs[0], superlevel=True)[:40, :17]]
    for d, f in zip(diagrams_of_filtrations(fs), fs):
        assert same(d, diagrams_of_filtrations([f], 'cripser')[0])


# ---- known answers and invariants ----------------------------------------------------------------

def test_essential_bar_is_range_and_unique():
    for x in real_images(n=30):
        d = cubical_persistence(x)
        f = x / 255.0
        assert d.h0[0].tolist() == [f.min(), f.max()]           # canonical order puts it first
        assert (d.persistence(0) > 0).sum() >= len(d.h0) - 1     # only the essential bar may be zero-length
        assert diagram_range(d) == f.max() - f.min()


def test_empty_and_full_masks():
    x = real_images(n=1)[0]
    assert cubical_persistence(x, np.zeros(x.shape, bool)) == Diagram([[1.0, 1.0]], [])
    assert cubical_persistence(x, np.ones(x.shape, bool)) == cubical_persistence(x)
    assert cubical_persistence(x, np.zeros(x.shape, bool), superlevel=True) == Diagram([[1.0, 1.0]], [])


def test_dihedral_invariance_real_with_mask():
    rng = np.random.default_rng(3)
    for x in real_images(n=10):
        m = rng.random(x.shape) < 0.85
        ref = cubical_persistence(x, m)
        for t in (np.fliplr, np.flipud, np.rot90, lambda a: np.rot90(a, 2), lambda a: np.rot90(a, 3)):
            assert relative_bottleneck(ref, cubical_persistence(t(x), t(m))) == (0.0, 0.0, 0.0)


def test_rgb_uses_bt601_luma():
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    gray = (rgb.astype(np.float64) / 255) @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(as_float_image(rgb, dtype=np.float64, gray=True), gray, atol=1e-12)
    assert cubical_persistence(rgb) == cubical_persistence(np.clip(gray, 0, 1))


def test_superlevel_is_sublevel_of_inverse():
    for x in real_images(n=10):
        f = x / 255.0
        assert cubical_persistence(f, superlevel=True) == cubical_persistence(1.0 - f)


# ---- relative bottleneck -------------------------------------------------------------------------

def test_approximate_bottleneck_error_bound_on_real_pairs():
    from scipy.ndimage import gaussian_filter
    rng = np.random.default_rng(5)
    worst = 0.0
    for i, x in enumerate(real_images('pneumoniamnist', n=80)):
        f = x / 255.0
        g = [np.clip(f + rng.normal(0, 0.05, f.shape), 0, 1), gaussian_filter(f, 1.0), np.clip(1.2 * f - 0.1, 0, 1)][i % 3]
        a, b = cubical_persistence(f), cubical_persistence(g)
        for tol in (0.01, 0.05):
            ex, ap = relative_bottleneck(a, b), relative_bottleneck(a, b, exact=False, tol=tol)
            err = np.abs(np.subtract(ex, ap)).max()
            assert err <= tol * (1 + 1e-9), (i, tol, err)
            worst = max(worst, err / tol)
    assert worst > 0   # the approximation is really in use


def test_relative_bottleneck_degenerate_range():
    c = cubical_persistence(np.full((8, 8), 0.3))
    assert relative_bottleneck(c, c) == (0.0, 0.0, 0.0)
    # two constant images: both essential bars lie on the diagonal, so d_B = 0
    assert relative_bottleneck(c, cubical_persistence(np.full((8, 8), 0.5))) == (0.0, 0.0, 0.0)
    half = np.full((8, 8), 0.3); half[:, 4:] = 0.5            # essential bar (0.3, 0.5): d_B = 0.1, normalised by 1.0
    r0, r1, r = relative_bottleneck(c, cubical_persistence(half))
    assert np.isfinite(r) and r == pytest.approx(0.1) and r1 == 0.0


# ---- tokens and collate --------------------------------------------------------------------------

def test_tokens_sorted_padded_real():
    for x in real_images(n=20):
        d = cubical_persistence(x)
        tok, pad = diagram_tokens(d)
        for off, k, pts in ((0, 48, d.h0), (48, 96, d.h1)):
            n = min(k, len(pts))
            assert (~pad[off:off + n]).all() and pad[off + n:off + k].all()
            p = (tok[off:off + n, 1] - tok[off:off + n, 0]).numpy()
            assert (np.diff(p) <= 1e-6).all()   # sorted in float64; float32 rounding may swap near-ties
            top = np.sort(pts[:, 1] - pts[:, 0])[::-1][:n].astype(np.float32)
            np.testing.assert_allclose(p, top, atol=1e-6)
        assert tok[pad].abs().sum() == 0


class _Views(Dataset):
    def __init__(self, imgs, maker): self.imgs, self.maker = imgs, maker
    def __len__(self): return len(self.imgs)
    def __getitem__(self, i):
        x = self.imgs[i]
        return torch.from_numpy(x.astype(np.float32) / 255), self.maker.view(x), i


def test_token_maker_in_dataloader_workers():
    "TokenMaker.view in two worker processes, batched by the default collate: the tokens it gives in this process."
    imgs = real_images(n=10)
    maker = TokenMaker(PersistenceConfig(filtration='superlevel'))
    batches = list(DataLoader(_Views(imgs, maker), batch_size=4, num_workers=2))
    assert len(batches) == 3
    x, (tok, pad), idx = batches[0]
    assert x.shape == (4, 28, 28) and idx.tolist() == [0, 1, 2, 3]
    assert tok.shape == (4, 144, 4) and pad.shape == (4, 144) and pad.dtype == torch.bool
    t0, p0 = diagram_tokens(cubical_persistence(imgs[0], superlevel=True))
    assert torch.equal(tok[0], t0) and torch.equal(pad[0], p0)
    assert collate_tokens([maker.view(v) for v in imgs[:3]])[0].shape == (3, 144, 4)


def test_token_maker_split_equals_views_on_real_rois(tmp_path):
    "A split's tokens (parallel, cached) are each image's view tokens on its Otsu ROI, at 28 and 64 px."
    from topocl.roi import compute_rois
    for size in (28, 64):
        imgs = real_images(n=24) if size == 28 else upsample(real_images(n=12), 64)
        maker = TokenMaker(PersistenceConfig(scales=[1.0, 0.5]))
        tk = maker.split(imgs, tmp_path, {'dataset': 'breastmnist', 'split': 'train', 'size': size}, n_jobs=2)
        masks = compute_rois(imgs, 'otsu', progress=False).masks
        for i in range(len(imgs)): assert torch.equal(tk.tokens[i], maker.view(imgs[i], masks[i])[0]), (size, i)


# ---- the dataset engine --------------------------------------------------------------------------

def test_compute_diagrams_parallel_memmap_equals_serial(tmp_path):
    imgs = real_images(n=150)
    rng = np.random.default_rng(6)
    masks = rng.random(imgs.shape) < 0.9
    np.save(tmp_path / 'x.npy', imgs); np.save(tmp_path / 'm.npy', masks)
    xm, mm = np.load(tmp_path / 'x.npy', mmap_mode='r'), np.load(tmp_path / 'm.npy', mmap_mode='r')
    par = compute_diagrams(xm, mm, engine=EngineSettings(n_jobs=2, chunk_size=16, progress=False))
    ser = compute_diagrams(imgs, masks, backend='gudhi', engine=EngineSettings(n_jobs=1, progress=False))
    assert par == ser and len(par) == 150
    assert all(same(par[i], cubical_persistence(imgs[i], masks[i])) for i in range(0, 150, 17))


def test_compute_diagrams_multiscale_parallel():
    imgs = upsample(real_images(n=12), 64)
    ds = compute_diagrams(imgs, scales=(1.0, 0.5, 0.25), engine=EngineSettings(n_jobs=2, chunk_size=3, progress=False))
    assert ds.scales == (1.0, 0.5, 0.25)
    for i in (0, 7, 11):
        per = multiscale_persistence(imgs[i], scales=(1.0, 0.5, 0.25))
        assert all(same(ds.diagram(i, s), per[s]) for s in range(3))
        assert ds[i] == Diagram.concat(per)


def test_area_downsample_matches_torch():
    rng = np.random.default_rng(7)
    for h, w, s in ((64, 64, 0.25), (37, 23, 0.5), (224, 224, 0.125), (10, 3, 0.34)):
        x = rng.random((h, w))
        ref = torch.nn.functional.interpolate(torch.from_numpy(x)[None, None], scale_factor=s, mode='area')[0, 0].numpy()
        np.testing.assert_allclose(area_downsample(x, s), ref, atol=1e-12)


def test_compute_diagrams_bad_input_names_image():
    imgs = real_images(n=40).astype(np.float64) / 255
    imgs[33, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r'images\[33\].*NaN or inf'):
        compute_diagrams(imgs, engine=EngineSettings(n_jobs=2, chunk_size=5, progress=False))
    with pytest.raises(ValueError, match='masks'):
        compute_diagrams(imgs[:3], np.ones((3, 5, 5), bool), engine=EngineSettings(n_jobs=1, progress=False))
    with pytest.raises(ValueError, match='backend'):
        compute_diagrams(imgs[:3], backend='ripser')


def test_cache_roundtrip_invalidation_and_corruption(tmp_path):
    imgs = real_images(n=50)
    key = {'dataset': 'breastmnist', 'split': 'train', 'size': 28, 'roi': 'full'}
    eng = EngineSettings(progress=False, cache_dir=tmp_path)
    a = compute_diagrams(imgs, cache_key=key, engine=eng)
    files = sorted(tmp_path.iterdir()); assert len(files) == 1 and files[0].suffix == '.npz'
    mtime = files[0].stat().st_mtime_ns
    b = compute_diagrams(imgs, cache_key=key, engine=eng)
    assert a == b and files[0].stat().st_mtime_ns == mtime         # loaded, not rewritten
    # every ingredient of the key changes the file
    compute_diagrams(imgs, cache_key={**key, 'split': 'val'}, engine=eng)
    compute_diagrams(imgs, backend='gudhi', cache_key=key, engine=eng)
    compute_diagrams(imgs, scales=(1.0, 0.5), cache_key=key, engine=eng)
    compute_diagrams(imgs[:49], cache_key=key, engine=eng)
    changed = imgs.copy(); changed[0, 0, 0] ^= 1
    compute_diagrams(changed, cache_key=key, engine=eng)   # image 0 is in the fingerprint
    assert len(list(tmp_path.iterdir())) == 6
    # a file at the right name whose stored key differs is recomputed
    full = diagrams_cache_key(imgs, cache_key=key)
    p = cache_path(tmp_path, full)
    DiagramSet(a.h0[:0], np.zeros(1, np.int64), a.h1[:0], np.zeros(1, np.int64), key={'other': 1}).save(p)
    with pytest.warns(UserWarning, match='recomputing'):
        c = compute_diagrams(imgs, cache_key=key, engine=eng)
    assert c == a and DiagramSet.load(p).key == json.loads(json.dumps(full))
    # corrupt file: recomputed and rewritten
    p.write_bytes(b'\x00' * 100)
    with pytest.warns(UserWarning, match='recomputing'):
        assert compute_diagrams(imgs, cache_key=key, engine=eng) == a
    assert DiagramSet.load(p) == a
    assert not [f for f in tmp_path.iterdir() if f.name.startswith('.')]   # no temporary files left


def test_diagramset_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        DiagramSet.load(tmp_path / 'missing.npz')
    np.savez(tmp_path / 'bad.npz', h0=np.zeros((3, 2)), off0=np.array([0, 5]), h1=np.zeros((0, 2)), off1=np.array([0, 0]),
             scales=np.array([1.0]), format=np.int64(1), key=np.str_('null'))
    with pytest.raises(ValueError, match='bad.npz.*offsets'):
        DiagramSet.load(tmp_path / 'bad.npz')


# ---- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize('img,msg', [
    (np.array([[0.1, np.nan]]), 'NaN'),
    (np.array([[0.1, -np.inf]]), 'NaN or inf'),
    (np.array([[0.1, 1.2]]), r'\[0, 1\]'),
    (np.zeros((4, 4, 4), np.uint8), 'shape'),
    (np.zeros((2, 4, 4, 3), np.uint8), 'shape'),
    (np.zeros(7), 'shape'),
    (np.zeros((0, 5)), 'empty'),
    (np.zeros((4, 4), np.int32), 'dtype'),
])
def test_bad_images(img, msg):
    with pytest.raises(ValueError, match=msg):
        cubical_persistence(img)


def test_bad_masks():
    x = np.zeros((6, 6))
    with pytest.raises(ValueError, match='shape'): cubical_persistence(x, np.ones((6, 5), bool))
    with pytest.raises(ValueError, match='bool'): cubical_persistence(x, np.ones((6, 6), np.uint8))
    with pytest.raises(ValueError, match='bool'): cubical_persistence(x, np.ones((6, 6)))


def test_tune_malloc_removes_page_faults():
    "cripser allocates fresh pages per 224 px image unless malloc keeps freed ones (GUDHI's 2-D path does not fault)."
    import subprocess, sys
    code = """
import resource, numpy as np, sys
from topocl.persistence import cubical_persistence, tune_malloc
rng = np.random.default_rng(0)
imgs = [np.kron(rng.integers(0, 256, (28, 28), dtype=np.uint8), np.ones((8, 8), np.uint8)) for _ in range(6)]
def faults():
    f = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for x in imgs: cubical_persistence(x, backend='cripser')
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f
faults(); before = faults()
ok = tune_malloc(); faults(); after = faults()
print(ok, before, after)
"""
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.split()
    ok, before, after = out[0] == 'True', int(out[1]), int(out[2])
    if not ok: pytest.skip('glibc mallopt not available here')
    assert after * 5 < before, (before, after)
