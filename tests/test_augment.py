"Integration tests of topocl.augment: DataLoader workers, calibration files, run_calibration on real data, n_jobs."
import json, os, pickle, re
from pathlib import Path
import numpy as np
import pytest
import torch
from topocl.augment import (Calibration, CalibrationData, CalibrationSettings, TopoAugment, ValidationSettings, apply_ops,
                            band_summary, calibrate, run_calibration, validate, visual_augment)
from topocl.data import make_synthetic

COMBOS = (('flip', 'noise'), ('flip', 'noise', 'contrast'))
OPS = ('flip', 'rot90', 'noise', 'contrast')

@pytest.fixture(scope='module')
def syn():
    return make_synthetic(80, seed=31)

@pytest.fixture(scope='module')
def cal(syn):
    return calibrate(syn.images, syn.masks, CalibrationSettings(ops=OPS, combos=COMBOS, n_images=20, seed=0), meta={'dataset': 'synthetic'})

@pytest.fixture()
def cal_file(cal, tmp_path):
    return cal.save(tmp_path / 'cal.json')

class _Views(torch.utils.data.Dataset):
    "Each item is one topology-aware view of the same image, so differences come only from the augmentation's randomness."
    def __init__(self, aug, image, mask): self.aug, self.image, self.mask = aug, image, mask
    def __len__(self): return 8
    def __getitem__(self, i): return torch.from_numpy(self.aug(self.image, self.mask)[0])

def _epoch(loader): return torch.cat([b.flatten(1) for b in loader])

def test_dataloader_workers_draw_distinct_reproducible_views(cal, syn):
    aug = TopoAugment(cal, 'strong', seed=3)
    loader = torch.utils.data.DataLoader(_Views(aug, syn.images[0], syn.masks[0]), batch_size=2, num_workers=2)
    torch.manual_seed(0); e1, e2 = _epoch(loader), _epoch(loader)
    torch.manual_seed(0); e1_again = _epoch(loader)
    assert len({tuple(v.tolist()) for v in e1}) == len(e1)   # no two workers (or items) repeat a view
    assert not torch.equal(e1, e2)                              # re-created workers do not replay the last epoch
    assert torch.equal(e1, e1_again)                            # reproducible under torch.manual_seed

def test_visual_augment_in_workers(syn):
    ds = [(syn.images[i],) for i in range(8)]
    aug = visual_augment(28, 1, 'strong')
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, collate_fn=lambda b: torch.stack([aug(x[0]) for x in b]))
    assert [tuple(b.shape) for b in loader] == [(4, 1, 28, 28)] * 2

def test_calibration_independent_of_n_jobs(syn):
    s = CalibrationSettings(ops=('flip', 'noise'), combos=(('flip', 'noise'),), n_images=8, seed=5)
    a, b = calibrate(syn.images, syn.masks, s, n_jobs=1), calibrate(syn.images, syn.masks, s, n_jobs=2)
    assert a.entries == b.entries

def test_topoaugment_from_path_and_pickle(cal_file, syn):
    aug = TopoAugment(cal_file, 'weak', seed=1)
    clone = pickle.loads(pickle.dumps(aug))
    y1, m1 = aug(syn.images[1], syn.masks[1]); y2, m2 = clone(syn.images[1], syn.masks[1])
    assert np.array_equal(y1, y2) and np.array_equal(m1, m2)
    with pytest.raises(ValueError, match='level'): TopoAugment(cal_file, 'medium')

def _write(tmp_path, data, name='bad.json'):
    p = tmp_path / name; p.write_text(data if isinstance(data, str) else json.dumps(data)); return p

@pytest.mark.parametrize('edit, match', [
    (lambda d: d.update(format='topocl.diagrams'), "'format'"),
    (lambda d: d.update(version=99), "'version'"),
    (lambda d: d.pop('entries'), "'entries'"),
    (lambda d: d['meta'].pop('bands'), "'meta.bands'"),
    (lambda d: d['meta'].update(bands={'weak': [0.2, 0.1]}), "'meta.bands.weak'"),
    (lambda d: d['entries']['flip+noise'].update(ops=['flip', 'shear']), "unknown operation 'shear'"),
    (lambda d: d['entries']['flip+noise']['levels']['weak']['ranges'].pop('noise'), "flip+noise.levels.weak.ranges"),
    (lambda d: d['entries']['flip+noise']['levels']['strong']['ranges'].update(noise=[-0.1, 0.2]), "flip+noise.levels.strong.ranges.noise"),
    (lambda d: d['entries']['flip+noise']['levels'].pop('strong'), "flip+noise.levels.strong"),
])
def test_bad_calibration_files_name_the_field(cal, tmp_path, edit, match):
    data = json.loads(json.dumps(cal.data)); edit(data)
    p = _write(tmp_path, data)
    with pytest.raises(ValueError, match=re.escape(match)) as e: Calibration.load(p)
    assert str(p) in str(e.value)

def test_unreadable_calibration_files(tmp_path):
    with pytest.raises(FileNotFoundError, match='not found'): Calibration.load(tmp_path / 'none.json')
    with pytest.raises(ValueError, match='not a JSON'): Calibration.load(_write(tmp_path, '{"format": '))
    with pytest.raises(ValueError, match='JSON object'): Calibration.load(_write(tmp_path, '[1, 2]'))
    (tmp_path / 'bin.json').write_bytes(b'\xff\xfe\x00garbage')
    with pytest.raises(ValueError, match='not a JSON'): Calibration.load(tmp_path / 'bin.json')

def test_failed_save_keeps_the_old_file(cal, tmp_path):
    p = cal.save(tmp_path / 'cal.json'); before = p.read_text()
    broken = Calibration({**cal.data, 'meta': {**cal.meta, 'oops': object()}})
    with pytest.raises(TypeError): broken.save(p)
    assert p.read_text() == before and os.listdir(tmp_path) == ['cal.json']

def test_calibrate_rejects_bad_arguments(syn):
    S = CalibrationSettings
    with pytest.raises(ValueError, match='masks'): calibrate(syn.images, syn.masks[:, :5], S(ops=('noise',), combos=()))
    with pytest.raises(ValueError, match='use 2 or 3'): calibrate(syn.images, None, S(combos=(('flip', 'noise', 'blur', 'contrast'),)))
    with pytest.raises(ValueError, match='unknown'): calibrate(syn.images, None, S(ops=('swirl',), combos=()))
    with pytest.raises(ValueError, match='bands'): calibrate(syn.images, None, S(ops=('noise',), combos=(), bands={'weak': (0.2, 0.1)}))
    with pytest.raises(ValueError, match='not in ops'): calibrate(syn.images, None, S(ops=('noise',), combos=(('flip', 'blur'),), n_images=2))
    with pytest.raises(ValueError, match=r'\[0, 1\]'): calibrate(syn.images / 100.0, None, S(ops=('noise',), combos=()))
    with pytest.raises(TypeError, match='CalibrationSettings'): calibrate(syn.images, None, {'ops': ('noise',)})

def test_rgb_calibration_and_views():
    pool, held = make_synthetic(60, rgb=True, seed=41), make_synthetic(24, rgb=True, seed=42)
    c = calibrate(pool.images, pool.masks, CalibrationSettings(ops=OPS, combos=COMBOS, n_images=20, seed=0))
    y, m = TopoAugment(c, 'strong', seed=0)(held.images[0], held.masks[0])
    assert y.shape == (28, 28, 3) and y.dtype == np.float32 and m.shape == (28, 28)
    rep = band_summary(validate(c, held.images, held.masks, n_views=2), c.bands)
    assert rep.median_in_band.all(), rep

def test_run_calibration_synthetic_writes_default_path(tmp_path, monkeypatch):
    monkeypatch.setenv('TOPOCL_CACHE', str(tmp_path))
    c = run_calibration(CalibrationData('synthetic', synthetic_n=60), roi='otsu', settings=CalibrationSettings(ops=OPS, combos=COMBOS, n_images=12),
                        validation=ValidationSettings(n_images=12, n_views=1))
    p = tmp_path / 'calibration' / 'synthetic_28px_train_otsu.json'
    assert p.exists() and Calibration.load(p).data == json.loads(json.dumps(c.data))
    assert c.meta['roi_settings']['polarity'] == 'auto' and c.meta['versions']['topocl']

def test_run_calibration_missing_medmnist(tmp_path):
    with pytest.raises(FileNotFoundError): run_calibration(CalibrationData('breastmnist', root=tmp_path), tmp_path / 'x.json')

def test_run_calibration_breastmnist(tmp_path, medmnist_root):
    out = tmp_path / 'breast.json'
    data = CalibrationData('breastmnist', root=medmnist_root)
    with pytest.raises(ValueError, match='ground-truth'): run_calibration(data, out, roi='truth')
    c = run_calibration(data, out, roi='otsu', settings=CalibrationSettings(ops=OPS, combos=COMBOS, n_images=48),
                        validation=ValidationSettings(n_images=48, n_views=2))
    saved = Calibration.load(out)
    assert saved.meta['dataset'] == 'breastmnist' and saved.meta['pool_size'] == 546 and saved.meta['n_images'] == 48
    assert saved.data['validation']['split'] == 'val'
    for key in ('flip', 'rot90'): assert saved.entries[key]['r']['median'] == [0.0]
    for key in ('noise', 'contrast', 'flip+noise', 'flip+noise+contrast'): assert saved.entries[key]['spearman']['rho'] > 0
    assert all(r['median_in_band'] for r in saved.data['validation']['summary']), saved.data['validation']['summary']
    assert len(c.admissible('weak')) == 2

def test_validate_makes_diagrams_and_distances_as_the_calibration_did(syn):
    "validate reads the file's persistence config and bottleneck mode: its r equals view_r with those settings."
    from topocl.augment import entry_key, view_r
    from topocl.persistence import PersistenceConfig
    import zlib
    p = PersistenceConfig(filtration='superlevel', normaliser='diagram')
    c = calibrate(syn.images, syn.masks, CalibrationSettings(ops=OPS, combos=COMBOS, n_images=12, seed=0, exact=False, keep_samples=False),
                  persistence=p)
    assert c.persistence == p and c.meta['exact_bottleneck'] is False
    views = validate(c, syn.images[40:44], syn.masks[40:44], n_views=2, seed=3)
    row = views.iloc[0]
    x, m = syn.images[40 + row.image].astype(np.float32) / 255, syn.masks[40 + row.image]
    rng = np.random.default_rng([3, int(row.image), 0, zlib.crc32(row.level.encode())])
    ops, inten = TopoAugment(c, row.level).sample(rng)
    assert entry_key(ops) == row.combo
    assert row.r == view_r(x, m, ops, inten, rng, None, p, exact=False)
    assert row.r != view_r(x, m, ops, inten, np.random.default_rng([3, int(row.image), 0, zlib.crc32(row.level.encode())]),
                           None, PersistenceConfig(), exact=False) or row.r == 0.0


@pytest.mark.parametrize('op', ['blur', 'contrast', 'erosion'])
def test_approximate_r_within_its_bound_at_224_px(op):
    "At 224 px calibration uses GUDHI's approximate bottleneck; on real views its r is within 0.01 of the exact one."
    from topocl.augment import view_r
    from topocl.roi import compute_rois
    f = Path(os.environ.get('TOPOCL_DATA', Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'medmnist')) / 'pneumoniamnist.npz'
    if not f.exists(): pytest.skip(f'real MedMNIST data not found at {f}')
    with np.load(f) as z: x = z['train_images'][:2]
    t = torch.nn.functional.interpolate(torch.from_numpy(x.astype(np.float32))[:, None], size=(224, 224), mode='bilinear')
    imgs = t[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()
    masks = compute_rois(imgs, 'otsu', progress=False).masks
    inten = {'blur': 2.0, 'contrast': 0.3, 'erosion': 1.0}[op]
    for i in range(len(imgs)):
        kw = dict(image=imgs[i], mask=masks[i], ops=[op], intensities={op: inten})
        exact = view_r(**kw, rng=np.random.default_rng(i), exact=True)
        approx = view_r(**kw, rng=np.random.default_rng(i), exact=False)
        assert exact > 0.01 and abs(exact - approx) <= 0.01, (op, i, exact, approx)
