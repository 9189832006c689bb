"BreastMNIST at 64 px (official MedMNIST+ file): checksums, loading, ROIs, diagrams, calibration and a short training run."
import hashlib, re
import numpy as np
import pytest
import torch, torch.nn.functional as F
from topocl.data import MEDMNIST_INFO, SPLITS, load_medmnist, load_dataset
from topocl.roi import compute_rois
from topocl.persistence import compute_diagrams, EngineSettings, PersistenceConfig
from topocl.augment import CalibrationSettings, calibrate
from topocl.roi import get_extractor

pytestmark = pytest.mark.usefixtures('isolated_env')

def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()

def test_checksums_64(shared_data):
    (digest, name), = [l.split() for l in (shared_data/'medmnist'/'MD5SUMS_64').read_text().splitlines() if l.strip()]
    assert name == 'breastmnist_64.npz' and _md5(shared_data/'medmnist'/name) == digest == MEDMNIST_INFO['breastmnist']['MD5_64']
    (sha, rel), = [l.split() for l in (shared_data/'SHA256SUMS_64').read_text().splitlines() if l.strip()]
    assert hashlib.sha256((shared_data/rel).read_bytes()).hexdigest() == sha

def _published(shared_data):
    "Counts and label counts of breastmnist_64 from PROVENANCE.md."
    line = next(l for l in (shared_data/'PROVENANCE.md').read_text().splitlines() if l.startswith('| medmnist/breastmnist_64.npz'))
    cells = [c.strip() for c in line.strip('|').split('|')]
    counts = [int(v) for v in re.findall(r'\d+', cells[5].split(',')[0])][:3]
    labels = [{int(k): int(v) for k, v in re.findall(r'(\d+):(\d+)', part)} for part in cells[6].split(';')]
    return dict(zip(SPLITS, counts)), dict(zip(SPLITS, labels))

def test_load_64_matches_published_counts(shared_data, medmnist_root):
    counts, label_counts = _published(shared_data)
    for split in SPLITS:
        x, y = load_dataset('breastmnist', split, root=medmnist_root, size=64)
        assert x.shape == (counts[split], 64, 64) and x.dtype == np.uint8
        assert dict(enumerate(np.bincount(y).tolist())) == label_counts[split]

def test_64_px_are_the_28_px_images(medmnist_root):
    "Same images and labels at both sizes: area-downsampled 64 px images correlate with the 28 px ones."
    x28, y28 = load_medmnist('breastmnist', 'test', root=medmnist_root)
    x64, y64 = load_medmnist('breastmnist', 'test', root=medmnist_root, size=64)
    assert (y28 == y64).all()
    small = F.interpolate(torch.from_numpy(x64).float()[:, None], size=(28, 28), mode='area')[:, 0].numpy()
    corr = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(small, x28.astype(np.float32))]
    assert min(corr) > 0.95, min(corr)

def test_rois_and_diagrams_at_64_px(medmnist_root, tmp_path):
    "Otsu ROIs cover a region, not a speck nor the whole image; 64 px diagrams hold more features than 28 px ones."
    x64, _ = load_medmnist('breastmnist', 'test', root=medmnist_root, size=64)
    x28, _ = load_medmnist('breastmnist', 'test', root=medmnist_root)
    n = 32
    r = compute_rois(x64[:n], 'otsu', cache_dir=tmp_path, cache_key=dict(dataset='breastmnist', split='test', size=64), progress=False)
    m = np.asarray(r.masks)
    assert m.shape == (n, 64, 64) and r.n_fallback == 0
    frac = m.mean((1, 2)); assert (frac > 0.01).all() and (frac < 0.95).all()
    d64 = compute_diagrams(x64[:n], m, engine=EngineSettings(n_jobs=1, progress=False))
    m28 = np.asarray(compute_rois(x28[:n], 'otsu', progress=False).masks)
    d28 = compute_diagrams(x28[:n], m28, engine=EngineSettings(n_jobs=1, progress=False))
    count = lambda ds: np.mean([len(ds[i][0]) + len(ds[i][1]) for i in range(n)])
    assert count(d64) > count(d28) > 0
    for i in range(n):   # diagrams of [0, 1] images: births before deaths, inside [0, 1]
        for dim in (0, 1):
            p = d64[i][dim]
            assert ((p[:, 0] <= p[:, 1]) & (p >= 0).all(1) & (p <= 1).all(1)).all()

def test_calibration_default_distances_by_size(medmnist_root):
    "The default `exact='auto'`: exact at 64 px, GUDHI's approximation at 224 px (the same images upsampled), recorded in the file."
    x64, _ = load_medmnist('breastmnist', 'train', root=medmnist_root, size=64)
    kw = CalibrationSettings(ops=('noise', 'flip'), combos=(('flip', 'noise'),), n_images=2, n_check=1)
    cal = calibrate(x64, get_extractor('otsu'), kw)
    assert cal.meta['exact_bottleneck'] is True and cal.meta['image_shape'] == [64, 64]
    assert cal.entries['flip']['r']['median'] == [0.0]
    x224 = F.interpolate(torch.from_numpy(x64[:2]).float()[:, None], size=(224, 224), mode='bilinear')[:, 0]
    cal = calibrate(x224.clamp(0, 255).round().to(torch.uint8).numpy(), get_extractor('otsu'), kw)
    assert cal.meta['exact_bottleneck'] is False and cal.meta['image_shape'] == [224, 224]
