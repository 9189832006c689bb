"Integration tests for topocl.roi: bad input, the fallback rule, the on-disk cache, SAM checkpoints, real data."
import os, json, sys, warnings
from pathlib import Path
import numpy as np
import pytest
import torch

from topocl.roi import (ROIExtractor, FullImageROI, OtsuROI, SamROI, PackedMasks, SAM_CHECKPOINT_URLS,
                        compute_rois, get_extractor, iou, load_sam, random_sam, roi_cache_key, roi_cache_path)
from topocl.data import make_synthetic

torch.set_num_threads(1)
KEY = dict(dataset='synthetic', split='train', size=28)


class Counting(ROIExtractor):
    "Otsu that counts how many images it was asked for, to see whether the cache was used."
    name = 'counting'
    def __init__(self, level=0.5): self.level, self.calls = level, 0
    def settings(self): return dict(level=self.level)
    def _mask(self, image):
        self.calls += 1
        g = image.astype(np.float32) / 255 if image.dtype == np.uint8 else image
        return (g if g.ndim == 2 else g.mean(-1)) > self.level


class Empty(ROIExtractor):
    name = 'empty'
    def _mask(self, image): return np.zeros(image.shape[:2], bool)


# ---------------------------------------------------------------- bad input
BAD = [
    (np.zeros((4, 8, 8, 4), np.uint8), 'RGB'),        # RGBA
    (np.zeros((4, 8), np.uint8), 'RGB'),              # no image axes
    (np.zeros((2, 4, 8, 8), np.uint8), 'RGB'),        # channels first
    (np.zeros((4, 8, 8), np.int64), 'dtype int64'),
    (np.zeros((4, 8, 8), np.uint16), 'dtype uint16'),
    (np.full((4, 8, 8), 1.5, np.float32), '[0, 1]'),
    (np.full((4, 8, 8), -0.1), '[0, 1]'),
    (np.full((4, 8, 8), np.nan, np.float32), 'finite'),
    (np.zeros((4, 0, 8), np.uint8), 'empty side'),
    (np.zeros((8, 8, 3), np.uint8), 'images[None]'),  # one RGB image where a stack is expected
]

@pytest.mark.parametrize('images,msg', BAD)
@pytest.mark.parametrize('extractor', ['otsu', 'full'])
def test_compute_rois_rejects_bad_images(images, msg, extractor):
    with pytest.raises(ValueError, match=msg.replace('[', r'\[').replace(']', r'\]')):
        compute_rois(images, extractor, progress=False)

@pytest.mark.parametrize('image', [np.zeros((8, 8, 2), np.uint8), np.zeros((8,), np.uint8), np.zeros((8, 8), np.int32),
                                   np.full((8, 8), 255.0), np.zeros((1, 8, 8), np.uint8)])
def test_single_image_rejected(image):
    for ex in (OtsuROI(), FullImageROI()):
        with pytest.raises(ValueError): ex(image)

def test_ragged_list_rejected():
    with pytest.raises(ValueError, match='same-size images'):
        compute_rois([np.zeros((8, 8), np.uint8), np.zeros((9, 8), np.uint8)], 'otsu', progress=False)
    r = compute_rois([np.zeros((8, 8), np.uint8), np.eye(8, dtype=np.uint8) * 255], 'otsu', progress=False)  # a list is fine
    assert r.masks.shape == (2, 8, 8) and list(r.fallback) == [0]

def test_bad_settings():
    with pytest.raises(ValueError, match='polarity'): OtsuROI(polarity='light')
    with pytest.raises(ValueError, match='min_object'): OtsuROI(min_object=-1)
    with pytest.raises(ValueError, match='fractions'): OtsuROI(max_hole=5)
    with pytest.raises(ValueError, match="unknown ROI extractor 'snake'"): get_extractor('snake')
    with pytest.raises(ValueError, match='JSON'): compute_rois(np.zeros((2, 8, 8), np.uint8), 'full', cache_dir='x', cache_key=object())

def test_extractor_returning_wrong_masks_is_an_error():
    class Bad(ROIExtractor):
        def _mask(self, image): return np.ones((3, 3), np.uint8)
    with pytest.raises(RuntimeError, match='expected'): Bad()(np.arange(64, dtype=np.uint8).reshape(8, 8))


# ---------------------------------------------------------------- the fallback rule
def test_fallback_constant_and_empty():
    s = make_synthetic(12, size=28, seed=5)
    imgs = np.stack([s.images] * 3, -1)                     # RGB
    imgs[2] = 0                                              # all black
    imgs[4] = 255                                            # all white
    imgs[7] = (10, 200, 30)                                  # one constant color
    res = compute_rois(imgs, 'otsu', progress=False)
    assert list(res.fallback) == [2, 4, 7] and res.n_fallback == 3
    assert res.fallback.dtype == np.int64
    m = np.asarray(res.masks)
    assert m[[2, 4, 7]].all()                                # the full image
    ok = np.setdiff1d(np.arange(12), [2, 4, 7])
    assert iou(m[ok], s.masks[ok]).mean() > 0.9              # the others are real ROIs
    assert '3 fell back' in res.summary()

def test_fallback_empty_mask_from_extractor():
    imgs = make_synthetic(5, size=28, seed=1).images
    res = compute_rois(imgs, Empty(), progress=False)
    assert list(res.fallback) == [0, 1, 2, 3, 4] and np.asarray(res.masks).all()
    m, fell = Empty().extract(imgs[0])
    assert fell and m.all() and m.shape == (28, 28)

def test_full_image_extractor():
    imgs = make_synthetic(3, size=28, seed=1).images
    res = compute_rois(imgs, 'full', progress=False)
    assert np.asarray(res.masks).all() and res.n_fallback == 0


# ---------------------------------------------------------------- Otsu on the synthetic set
@pytest.mark.parametrize('rgb', [False, True])
@pytest.mark.parametrize('size', [28, 64])
def test_otsu_iou_and_rings(rgb, size):
    s = make_synthetic(60, size=size, rgb=rgb, seed=11)
    res = compute_rois(s.images, 'otsu', progress=False)
    m = np.asarray(res.masks)
    assert iou(m, s.masks).mean() >= 0.9 and res.n_fallback == 0
    # class 2 is one ring: its ROI must keep exactly one hole (H1 is computed on it later)
    from scipy import ndimage
    rings = np.flatnonzero(s.labels == 2)
    holes = [ndimage.label(np.pad(~m[i], 1, constant_values=True))[1] - 1 for i in rings]
    assert np.mean(np.array(holes) == 1) >= 0.9, holes

def test_otsu_float_and_uint8_agree():
    s = make_synthetic(10, size=28, seed=4)
    a = compute_rois(s.images, 'otsu', progress=False)
    b = compute_rois(s.images / 255.0, 'otsu', progress=False)
    assert np.array_equal(np.asarray(a.masks), np.asarray(b.masks))


# ---------------------------------------------------------------- cache
def test_cache_roundtrip_and_reuse(tmp_path):
    imgs = make_synthetic(20, size=28, seed=2).images.copy(); imgs[3] = 0
    ex = Counting()
    a = compute_rois(imgs, ex, cache_dir=tmp_path, cache_key=KEY, progress=False)
    assert ex.calls == 19 and not a.from_cache and a.path.exists()
    b = compute_rois(imgs, ex, cache_dir=tmp_path, cache_key=KEY, progress=False)
    assert ex.calls == 19 and b.from_cache                 # nothing recomputed
    assert np.array_equal(np.asarray(a.masks), np.asarray(b.masks)) and list(b.fallback) == [3]
    with np.load(a.path) as z:                               # bit-packed, and the key is inside the file
        assert z['packed'].dtype == np.uint8 and z['packed'].shape == (20, (28*28 + 7)//8)
        assert json.loads(str(z['key'][()]))['dataset'] == KEY
    assert [p.name for p in tmp_path.iterdir()] == [a.path.name]   # no temporary file left

def test_cache_key_changes_recompute(tmp_path):
    imgs = make_synthetic(6, size=28, seed=2).images
    ex = Counting()
    compute_rois(imgs, ex, cache_dir=tmp_path, cache_key=KEY, progress=False)
    compute_rois(imgs, ex, cache_dir=tmp_path, cache_key=dict(KEY, split='val'), progress=False)   # other dataset key
    assert ex.calls == 12
    ex.level = 0.6                                                                                # other settings
    r = compute_rois(imgs, ex, cache_dir=tmp_path, cache_key=KEY, progress=False)
    assert ex.calls == 18 and not r.from_cache
    compute_rois(imgs[:5], ex, cache_dir=tmp_path, cache_key=KEY, progress=False)                # other shape
    assert ex.calls == 23 and len(list(tmp_path.glob('*.npz'))) == 4

def test_cache_without_key_hashes_pixels(tmp_path):
    imgs = make_synthetic(4, size=28, seed=2).images
    ex = Counting()
    compute_rois(imgs, ex, cache_dir=tmp_path, progress=False)
    compute_rois(imgs.copy(), ex, cache_dir=tmp_path, progress=False)
    assert ex.calls == 4
    other = imgs.copy(); other[0, 0, 0] ^= 1
    compute_rois(other, ex, cache_dir=tmp_path, progress=False)
    assert ex.calls == 8

def test_cache_stored_key_checked(tmp_path):
    "A file at the right name but holding another key (renamed, or a hash collision) is recomputed."
    imgs = make_synthetic(6, size=28, seed=2).images
    ex = Counting()
    a = compute_rois(imgs, ex, cache_dir=tmp_path, cache_key=KEY, progress=False)
    b = compute_rois(imgs, ex, cache_dir=tmp_path, cache_key=dict(KEY, split='val'), progress=False)
    os.replace(b.path, a.path)
    with pytest.warns(UserWarning, match='another key'):
        c = compute_rois(imgs, ex, cache_dir=tmp_path, cache_key=KEY, progress=False)
    assert not c.from_cache and ex.calls == 18
    d = compute_rois(imgs, ex, cache_dir=tmp_path, cache_key=KEY, progress=False)
    assert d.from_cache and json.loads(str(np.load(a.path)['key'][()]))['dataset'] == KEY

@pytest.mark.parametrize('damage', [b'', b'garbage', 'truncate'])
def test_cache_damaged_file_recomputed(tmp_path, damage):
    imgs = make_synthetic(6, size=28, seed=2).images
    a = compute_rois(imgs, 'otsu', cache_dir=tmp_path, cache_key=KEY, progress=False)
    good = np.asarray(a.masks)
    a.path.write_bytes(a.path.read_bytes()[:100] if damage == 'truncate' else damage)
    with pytest.warns(UserWarning, match='unreadable'):
        b = compute_rois(imgs, 'otsu', cache_dir=tmp_path, cache_key=KEY, progress=False)
    assert not b.from_cache and np.array_equal(np.asarray(b.masks), good)
    assert compute_rois(imgs, 'otsu', cache_dir=tmp_path, cache_key=KEY, progress=False).from_cache

def test_cache_write_is_atomic(tmp_path, monkeypatch):
    "A crash while writing leaves neither a cache file nor a temporary file."
    imgs = make_synthetic(4, size=28, seed=2).images
    def boom(*a, **k): raise KeyboardInterrupt
    monkeypatch.setattr(np, 'savez_compressed', boom)
    with pytest.raises(KeyboardInterrupt): compute_rois(imgs, 'otsu', cache_dir=tmp_path, cache_key=KEY, progress=False)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    assert not compute_rois(imgs, 'otsu', cache_dir=tmp_path, cache_key=KEY, progress=False).from_cache

def test_cache_dir_created(tmp_path):
    d = tmp_path/'a'/'b'
    r = compute_rois(make_synthetic(2, size=28).images, 'otsu', cache_dir=d, cache_key=KEY, progress=False)
    assert r.path.parent == d and r.path.name.startswith('roi-otsu-synthetic_train_28-')

def test_progress_bar_only_on_a_terminal(capsys, monkeypatch):
    "Piped or logged, one summary line and no bar; on a terminal, the bar too."
    imgs = make_synthetic(3, size=28).images
    compute_rois(imgs, 'otsu', progress=True)
    got = capsys.readouterr()
    assert 'ROI otsu' not in got.err and '\r' not in got.out + got.err and "3 images, 0 fell back" in got.out + got.err
    monkeypatch.setattr(sys.stderr, 'isatty', lambda: True, raising=False)
    compute_rois(imgs, 'otsu', progress=True)
    assert 'ROI otsu' in capsys.readouterr().err


# ---------------------------------------------------------------- packed masks
@pytest.mark.parametrize('shape', [(3, 5, 7), (1, 1, 1), (4, 28, 28), (2, 13, 3)])
def test_packed_masks_roundtrip(shape):
    m = np.random.default_rng(0).random(shape) > 0.3
    p = PackedMasks.pack(m)
    assert np.array_equal(np.asarray(p), m) and p.shape == shape and len(p) == shape[0]
    assert all(np.array_equal(p[i], m[i]) for i in range(shape[0]))
    assert np.array_equal(p[::-1], m[::-1]) and p[0].dtype == bool
    with pytest.raises(ValueError): PackedMasks(p.packed[:, :-1] if p.packed.shape[1] > 1 else p.packed[:0], shape)


# ---------------------------------------------------------------- SAM: checkpoints
@pytest.mark.parametrize('model_type', ['vit_h', 'vit_l', 'vit_b'])
def test_missing_checkpoint_message(tmp_path, model_type):
    ck = tmp_path/f'missing_{model_type}.pth'
    with pytest.raises(FileNotFoundError) as e: SamROI(ck, model_type)
    msg = str(e.value)
    assert str(ck) in msg and repr(model_type) in msg and SAM_CHECKPOINT_URLS[model_type] in msg
    with pytest.raises(FileNotFoundError): get_extractor('sam', checkpoint=ck, model_type=model_type)

def test_unreadable_checkpoint_message(tmp_path):
    ck = tmp_path/'sam_vit_h_4b8939.pth'; ck.write_bytes(os.urandom(1000))
    with pytest.raises(ValueError, match='cannot read SAM checkpoint') as e: SamROI(ck)
    assert str(ck) in str(e.value) and SAM_CHECKPOINT_URLS['vit_h'] in str(e.value)
    with pytest.raises(ValueError, match='is a folder'): load_sam(tmp_path, 'vit_b')
    with pytest.raises(ValueError, match='needs a checkpoint'): SamROI()

def test_checkpoint_of_wrong_model(tmp_path):
    ck = tmp_path/'not_sam.pth'; torch.save({'w': torch.zeros(2)}, ck)
    with pytest.raises(ValueError, match='does not hold vit_b weights') as e: load_sam(ck, 'vit_b')
    assert str(ck) in str(e.value)
    with pytest.raises(ValueError, match='unknown SAM model_type'): load_sam(ck, 'vit_s')

@pytest.mark.slow
def test_load_real_format_checkpoint(tmp_path):
    "A state dict in the official format loads; the same file as another model type is refused clearly."
    sam = random_sam('vit_b', seed=3, device='cpu')
    ck = tmp_path/'sam_vit_b_test.pth'; torch.save(sam.state_dict(), ck)
    back = load_sam(ck, 'vit_b', device='cpu')
    for (k, v), (k2, v2) in zip(sam.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    with pytest.raises(ValueError, match='does not hold vit_l weights'): load_sam(ck, 'vit_l')
    ex = SamROI(ck, 'vit_b', device='cpu')
    assert ex.settings()['model'] == 'sam_vit_b_test.pth' and ex.settings()['checkpoint_bytes'] == ck.stat().st_size


# ---------------------------------------------------------------- SAM: the code path with random weights
def tiny_sam(**kw):
    return SamROI(model=random_sam('tiny', device='cpu'), points_per_side=4, pred_iou_thresh=0,
                  stability_score_thresh=0, max_area=1, max_border=1, min_size=64, **kw)

def test_sam_tiny_compute_rois_and_cache(tmp_path):
    s = make_synthetic(3, size=28, rgb=True, seed=6)
    imgs = s.images.copy(); imgs[1] = 0
    ex = tiny_sam(batch_size=2)
    r = compute_rois(imgs, ex, cache_dir=tmp_path, cache_key=KEY, progress=False)
    m = np.asarray(r.masks)
    assert m.shape == (3, 28, 28) and m.dtype == bool and 1 in r.fallback
    assert r.key['settings']['model'] == 'random-tiny-seed0'
    assert compute_rois(imgs, tiny_sam(), cache_dir=tmp_path, cache_key=KEY, progress=False).from_cache

def test_sam_non_square_and_large_images():
    ex = tiny_sam()
    img = (np.random.default_rng(0).random((20, 37)) * 255).astype(np.uint8)
    m, _ = ex.extract(img)
    assert m.shape == (20, 37) and ex.last_masks[0]['segmentation'].shape == (35, 64)   # long side upsampled to 64
    big = (np.random.default_rng(1).random((70, 80, 3)) * 255).astype(np.uint8)
    m, _ = ex.extract(big)
    assert m.shape == (70, 80) and ex.last_masks[0]['segmentation'].shape == (70, 80)   # no upsampling

def test_sam_foreground_rule_rejects_background():
    "With the default rule, background-sized and border-wrapping masks are dropped."
    ex = SamROI(model=random_sam('tiny', device='cpu'))
    h = w = 20
    obj = np.zeros((h, w), bool); obj[5:9, 5:9] = True
    edge = np.zeros((h, w), bool); edge[:, :3] = True          # touches the left border only: kept
    big = np.ones((h, w), bool); big[:2, :2] = False            # 99 % of the image
    ring = np.ones((h, w), bool); ring[1:-1, 1:-1] = False      # the whole border
    out = ex.select([dict(segmentation=x) for x in (obj, edge, big, ring)], (h, w))
    assert np.array_equal(out, obj | edge)

@pytest.mark.slow
def test_sam_vit_b_random_end_to_end():
    "The real ViT-B architecture, randomly initialised, on a small image: a valid mask of the image's shape."
    s = make_synthetic(1, size=28, seed=8)
    ex = SamROI(model=random_sam('vit_b', device='cpu'), points_per_side=8, pred_iou_thresh=0, stability_score_thresh=0)
    m, fell = ex.extract(s.images[0])
    assert m.shape == (28, 28) and m.dtype == bool and len(ex.last_masks) >= 1
    assert ex.last_masks[0]['segmentation'].shape == (256, 256)


# ---------------------------------------------------------------- real data
def test_otsu_on_breastmnist(medmnist_root, tmp_path):
    with np.load(medmnist_root/'breastmnist.npz') as z: imgs = z['test_images'][:64]
    r = compute_rois(imgs, 'otsu', cache_dir=tmp_path, cache_key=dict(dataset='breastmnist', split='test', size=28), progress=False)
    m = np.asarray(r.masks)
    assert m.shape == (64, 28, 28) and r.n_fallback == 0
    frac = m.mean((1, 2))
    assert (frac > 0.01).all() and (frac < 0.95).all()      # a region, neither a speck nor the whole image
