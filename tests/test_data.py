"Integration tests of topocl.data: real MedMNIST files, bad input, memory-mapped caches, image folders."
import csv, hashlib, json, re, shutil, tracemalloc, zipfile
from pathlib import Path
import numpy as np
import pytest
import torch
from skimage.measure import label as cc_label
from topocl.data import *
from topocl.data import MEDMNIST_INFO

pytestmark = pytest.mark.usefixtures('isolated_env')
REAL = ('breastmnist', 'pneumoniamnist')

# ---------------------------------------------------------------- real data

def _provenance_table(shared_data):
    "Published counts from PROVENANCE.md: flag -> ({split: count}, {split: {label: count}})."
    out = {}
    for line in (shared_data/'PROVENANCE.md').read_text().splitlines():
        m = re.match(r'\|\s*medmnist/(\w+)\.npz\s*\|', line)
        if not m: continue
        cells = [c.strip() for c in line.strip('|').split('|')]
        counts = [int(v) for v in re.findall(r'\d+', cells[5].split(',')[0])][:3]
        labels = [{int(k): int(v) for k, v in re.findall(r'(\d+):(\d+)', part)} for part in cells[6].split(';')]
        out[m.group(1)] = (dict(zip(SPLITS, counts)), dict(zip(SPLITS, labels)))
    return out

def _digest(path, algo):
    h = hashlib.new(algo)
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''): h.update(chunk)
    return h.hexdigest()

def test_checksums(shared_data):
    sha = [l.split() for l in (shared_data/'SHA256SUMS').read_text().splitlines() if l.strip()]
    md5 = [l.split() for l in (shared_data/'medmnist'/'MD5SUMS').read_text().splitlines() if l.strip()]
    assert len(sha) == 2 and len(md5) == 2
    for digest, name in sha: assert _digest(shared_data/name, 'sha256') == digest, name
    for digest, name in md5:
        assert _digest(shared_data/'medmnist'/name, 'md5') == digest, name
        assert MEDMNIST_INFO[name[:-4]]['MD5'] == digest  # the official 28 px files, as medmnist lists them

@pytest.mark.parametrize('flag', REAL)
def test_real_counts(shared_data, medmnist_root, flag):
    counts, label_counts = _provenance_table(shared_data)[flag]
    assert counts == MEDMNIST_INFO[flag]['n_samples']
    for split in SPLITS:
        x, y = load_medmnist(flag, split, root=medmnist_root)
        assert x.shape == (counts[split], 28, 28) and x.dtype == np.uint8
        assert y.shape == (counts[split],) and y.dtype == np.int64
        assert dict(enumerate(np.bincount(y).tolist())) == label_counts[split]
    d = describe_dataset(flag, root=medmnist_root)
    assert {s: v['count'] for s, v in d['splits'].items()} == counts
    assert {s: v['label_counts'] for s, v in d['splits'].items()} == label_counts

def test_real_memory_mapped_equals_direct(medmnist_root, tmp_path):
    x, y = load_medmnist('breastmnist', 'test', root=medmnist_root)
    xm, ym = load_medmnist('breastmnist', 'test', root=medmnist_root, mmap=True, cache_dir=tmp_path)
    assert isinstance(xm, np.memmap) and (np.asarray(xm) == x).all() and (ym == y).all()

# ---------------------------------------------------------------- MedMNIST: bad input

def _arrays(n=(6, 2, 2), size=28, rgb=False, n_cls=2):
    rng = np.random.default_rng(0); shape = (size, size, 3) if rgb else (size, size)
    out = {}
    for s, k in zip(SPLITS, n):
        out[f'{s}_images'] = rng.integers(0, 256, (k, *shape), dtype=np.uint8)
        out[f'{s}_labels'] = rng.integers(0, n_cls, (k, 1)).astype(np.uint8)
    return out

def _write(root, arrays, flag='breastmnist', size=28, compressed=False):
    root.mkdir(parents=True, exist_ok=True)
    path = root/(f'{flag}.npz' if size == 28 else f'{flag}_{size}.npz')
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path

def test_missing_file_message(tmp_path):
    with pytest.raises(FileNotFoundError) as e: load_medmnist('pathmnist', 'train', root=tmp_path, size=64)
    msg = str(e.value)
    for part in ("'pathmnist'", str(tmp_path/'pathmnist_64.npz'), 'download=True',
                 MEDMNIST_INFO['pathmnist']['url_64'], MEDMNIST_INFO['pathmnist']['MD5_64']):
        assert part in msg

def test_no_root():
    with pytest.raises(ValueError, match='TOPOCL_DATA'): load_medmnist('breastmnist', 'train')

def test_root_from_env(tmp_path, monkeypatch):
    _write(tmp_path, _arrays())
    monkeypatch.setenv('TOPOCL_DATA', str(tmp_path))
    assert load_medmnist('breastmnist', 'val')[0].shape == (2, 28, 28)

def test_bad_flag_size_split(tmp_path):
    with pytest.raises(ValueError, match='unknown MedMNIST 2D flag'): load_medmnist('nodulemnist3d', 'train', root=tmp_path)
    with pytest.raises(ValueError, match='size must be one of'): load_medmnist('breastmnist', 'train', root=tmp_path, size=100)
    with pytest.raises(ValueError, match='split must be one of'): load_medmnist('breastmnist', 'dev', root=tmp_path)

@pytest.mark.parametrize('mmap', [False, True])
@pytest.mark.parametrize('compressed', [False, True])
def test_truncated(tmp_path, mmap, compressed):
    path = _write(tmp_path, _arrays(), compressed=compressed)
    path.write_bytes(path.read_bytes()[:len(path.read_bytes())//2])
    with pytest.raises(ValueError, match=r'breastmnist\.npz: not a readable npz'):
        load_medmnist('breastmnist', 'train', root=tmp_path, mmap=mmap, cache_dir=tmp_path/'c')

def test_not_a_zip(tmp_path):
    (tmp_path/'breastmnist.npz').write_text('hello')
    with pytest.raises(ValueError, match='not a readable npz'): load_medmnist('breastmnist', 'train', root=tmp_path)

def _corrupt_member(path, member, offset=300):
    "Flip bytes inside a member's data (after its local header), keeping the archive's structure."
    with zipfile.ZipFile(path) as z: info = z.getinfo(member)
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for i in range(start + offset, start + offset + 16): data[i] ^= 0xFF
    path.write_bytes(bytes(data))

@pytest.mark.parametrize('mmap', [False, True])
@pytest.mark.parametrize('compressed', [False, True])
def test_corrupt_member(tmp_path, mmap, compressed):
    path = _write(tmp_path, _arrays(n=(60, 2, 2)), compressed=compressed)
    _corrupt_member(path, 'train_images.npy')
    cache = tmp_path/'c'
    with pytest.raises(ValueError, match=r"breastmnist\.npz: member 'train_images' is unreadable"):
        load_medmnist('breastmnist', 'train', root=tmp_path, mmap=mmap, cache_dir=cache)
    assert not [p for p in cache.rglob('*') if p.is_file()]  # no half-written cache file
    assert load_medmnist('breastmnist', 'val', root=tmp_path)[0].shape == (2, 28, 28)  # the other members still load

def test_missing_keys(tmp_path):
    a = _arrays(); del a['val_labels']
    _write(tmp_path, a)
    with pytest.raises(ValueError, match=r"breastmnist\.npz: missing key\(s\) \['val_labels'\]"):
        load_medmnist('breastmnist', 'val', root=tmp_path)
    assert load_medmnist('breastmnist', 'train', root=tmp_path)[0].shape == (6, 28, 28)

def test_length_mismatch(tmp_path):
    a = _arrays(); a['train_labels'] = a['train_labels'][:5]
    _write(tmp_path, a)
    with pytest.raises(ValueError, match=r"breastmnist\.npz: 6 images but 5 labels"): load_medmnist('breastmnist', 'train', root=tmp_path)

@pytest.mark.parametrize('bad', [2, 255])
def test_labels_out_of_range(tmp_path, bad):
    a = _arrays(); a['test_labels'][1] = bad
    _write(tmp_path, a)
    with pytest.raises(ValueError, match=rf"breastmnist\.npz: test_labels holds label value\(s\) \[{bad}\] outside 0\.\.1"):
        load_medmnist('breastmnist', 'test', root=tmp_path)

@pytest.mark.parametrize('key,value,msg', [
    ('train_images', np.zeros((6, 28, 28), np.float32), 'train_images has dtype float32, expected uint8'),
    ('train_images', np.zeros((6, 32, 32), np.uint8), r'train_images has shape \(6, 32, 32\), expected \(N, 28, 28\)'),
    ('train_images', np.zeros((6, 28, 28, 3), np.uint8), r'train_images has shape \(6, 28, 28, 3\), expected \(N, 28, 28\) for breastmnist'),
    ('train_labels', np.zeros((6, 1), np.float64), 'train_labels has dtype float64, expected integers'),
    ('train_labels', np.zeros((6, 2), np.uint8), r'train_labels has shape \(6, 2\), expected \(6, 1\)'),
    ('train_images', np.array([None]*6, dtype=object), 'train_images has dtype object, expected uint8'),
])
def test_wrong_dtype_or_shape(tmp_path, key, value, msg):
    a = _arrays(); a[key] = value
    np.savez(tmp_path/'breastmnist.npz', **a)  # object arrays are pickled by savez; the loader never unpickles
    with pytest.raises(ValueError, match=r'breastmnist\.npz: ' + msg): load_medmnist('breastmnist', 'train', root=tmp_path)

def test_rgb_and_multilabel(tmp_path):
    _write(tmp_path, _arrays(size=64, rgb=True, n_cls=9), flag='pathmnist', size=64)
    x, y = load_medmnist('pathmnist', 'train', root=tmp_path, size=64)
    assert x.shape == (6, 64, 64, 3) and y.shape == (6,) and y.dtype == np.int64
    with pytest.raises(ValueError, match=r'expected \(N, 64, 64, 3\)'):
        _write(tmp_path, _arrays(size=64), flag='pathmnist', size=64); load_medmnist('pathmnist', 'train', root=tmp_path, size=64)
    a = _arrays(); a['train_labels'] = np.random.default_rng(0).integers(0, 2, (6, 14)).astype(np.uint8)
    _write(tmp_path, a, flag='chestmnist')
    x, y = load_medmnist('chestmnist', 'train', root=tmp_path)
    assert y.shape == (6, 14) and y.dtype == np.int64 and (y == a['train_labels']).all()
    a['train_labels'][0, 3] = 2
    _write(tmp_path, a, flag='chestmnist')
    with pytest.raises(ValueError, match='outside 0..1'): load_medmnist('chestmnist', 'train', root=tmp_path)

def test_every_flag_and_size(tmp_path):
    "Every 2D flag at every size reads a file in its official layout (small counts)."
    for flag in MEDMNIST_FLAGS:
        for size in MEDMNIST_SIZES:
            make_fake_medmnist(tmp_path, flag, size, counts=(3, 2, 2), compressed=False)
            x, y = load_medmnist(flag, 'val', root=tmp_path, size=size, cache_dir=tmp_path/'c')
            rgb = MEDMNIST_INFO[flag]['n_channels'] == 3
            assert x.shape == ((2, size, size, 3) if rgb else (2, size, size)) and x.dtype == np.uint8
            assert isinstance(x, np.memmap) == (size >= 128)
            assert y.dtype == np.int64 and y.shape == ((2, 14) if flag == 'chestmnist' else (2,))
            (tmp_path/medmnist_file(flag, size, tmp_path).name).unlink()
            shutil.rmtree(tmp_path/'c', ignore_errors=True)

# ---------------------------------------------------------------- memory-mapped cache

def test_cache_rebuilt_when_source_changes(tmp_path):
    a = _arrays(size=128, rgb=True, n_cls=9)
    _write(tmp_path, a, flag='pathmnist', size=128)
    x, _ = load_medmnist('pathmnist', 'train', root=tmp_path, size=128)
    assert isinstance(x, np.memmap) and (np.asarray(x) == a['train_images']).all()
    cached = next((tmp_path/'topocl-cache').rglob('train_images.npy'))  # $TOPOCL_CACHE is used by default
    a['train_images'] = 255 - a['train_images']
    _write(tmp_path, a, flag='pathmnist', size=128)
    x2, _ = load_medmnist('pathmnist', 'train', root=tmp_path, size=128)
    assert (np.asarray(x2) == a['train_images']).all()
    assert sorted(p.name for p in cached.parent.iterdir()) == ['train_images.json', 'train_images.npy']

@pytest.mark.parametrize('compressed', [False, True])
def test_conversion_peak_memory(tmp_path, compressed):
    "Converting a split to the memory-map cache streams: traced peak memory stays far below the member size."
    n = 400 if compressed else 800  # 19.7 / 39.3 MB of images
    rng = np.random.default_rng(0)
    imgs = (rng.integers(0, 16, (n, 128, 128, 3), dtype=np.uint8) if compressed
            else rng.integers(0, 256, (n, 128, 128, 3), dtype=np.uint8))
    _write(tmp_path, {'train_images': imgs, 'train_labels': np.zeros((n, 1), np.uint8)}, flag='pathmnist', size=128, compressed=compressed)
    del imgs
    tracemalloc.start()
    try:
        x, _ = load_medmnist('pathmnist', 'train', root=tmp_path, size=128)
        peak = tracemalloc.get_traced_memory()[1]
    finally: tracemalloc.stop()
    nbytes = n*128*128*3
    assert isinstance(x, np.memmap) and x.shape == (n, 128, 128, 3)
    assert peak < 8*2**20, f'peak {peak/2**20:.1f} MiB for a {nbytes/2**20:.1f} MiB split'
    with np.load(tmp_path/'pathmnist_128.npz') as z: assert (np.asarray(x[::37]) == z['train_images'][::37]).all()

# ---------------------------------------------------------------- synthetic set

def _topology(mask):
    return cc_label(mask, connectivity=2).max(), cc_label(np.pad(~mask, 1, constant_values=True), connectivity=1).max() - 1

@pytest.mark.parametrize('size,rgb', [(28, False), (64, True), (224, False)])
def test_synthetic_topology(size, rgb):
    s = make_synthetic(12, size=size, rgb=rgb, seed=5)
    assert s.images.shape == ((12, size, size, 3) if rgb else (12, size, size)) and s.images.dtype == np.uint8
    allowed = {0: ({1}, {0}), 1: ({2, 3}, {0}), 2: ({1}, {1}), 3: ({2}, {1, 2})}
    for m, c in zip(s.masks, s.labels):
        comps, holes = _topology(m)
        assert comps in allowed[c][0] and holes in allowed[c][1]
    gray = s.images @ np.array([.299, .587, .114]) if rgb else s.images
    for g, m in zip(gray, s.masks): assert g[m].mean() > g[~m].mean() + 40

def test_synthetic_seed_and_splits():
    a = make_synthetic(30, seed=3)
    assert all((u == v).all() for u, v in zip(a, make_synthetic(30, seed=3)))
    assert (a.images != make_synthetic(30, seed=4).images).any()
    tr, va, te = (load_synthetic(s, n=30) for s in SPLITS)
    assert (tr.images != va.images).any() and (va.images != te.images).any()
    assert len(load_synthetic('val').labels) == 400

def test_synthetic_prepare_and_describe(tmp_path):
    r = prepare_dataset('synthetic', size=32, cache_dir=tmp_path, n_train=40, n_val=8, n_test=8, rgb=True)
    assert len(r['written']) == 9
    assert prepare_dataset('synthetic', size=32, cache_dir=tmp_path, n_train=40, n_val=8, n_test=8, rgb=True)['written'] == []
    x, y = load_dataset('synthetic', 'val', size=32, n=8, rgb=True, cache_dir=tmp_path)
    assert isinstance(x, np.memmap) and (x == make_synthetic(8, size=32, rgb=True, seed=1).images).all()
    d = describe_dataset('synthetic', size=32, rgb=True, n_val=8)
    assert d['splits']['val'] == dict(count=8, image_shape=[32, 32, 3], dtype='uint8', label_counts={0: 2, 1: 2, 2: 2, 3: 2})

# ---------------------------------------------------------------- ISIC2019 and Kvasir folders

def _isic_rows(root):
    with open(root/'ISIC_2019_Training_GroundTruth.csv', newline='') as f: return list(csv.reader(f))

def _write_rows(root, rows):
    with open(root/'ISIC_2019_Training_GroundTruth.csv', 'w', newline='') as f: csv.writer(f).writerows(rows)

def test_isic_split_saved_and_reused(tmp_path):
    root = make_fake_isic2019(tmp_path/'isic', n_per_class=10)
    x, y = load_isic2019('train', root, size=20)
    assert x.shape == (21, 20, 20, 3) and x.dtype == np.uint8 and np.bincount(y).tolist() == [7, 7, 7]
    split_file, = (tmp_path/'topocl-cache').glob('isic2019-*/split_seed0.json')
    sp = json.loads(split_file.read_text())
    ids = [i for s in SPLITS for i in sp[s]['ids']]
    assert sorted(ids) == sorted(r[0] for r in _isic_rows(root)[1:])  # a partition of the listed images
    # another size reuses the split; another cache folder makes the same split
    x2, y2 = load_isic2019('train', root, size=12)
    assert x2.shape == (21, 12, 12, 3) and (y2 == y).all()
    load_isic2019('test', root, size=12, cache_dir=tmp_path/'other')
    assert json.loads(next((tmp_path/'other').glob('*/split_seed0.json')).read_text())['test'] == sp['test']
    # a different seed gives a different split
    load_isic2019('val', root, size=12, seed=1)
    assert json.loads(split_file.with_name('split_seed1.json').read_text())['test']['ids'] != sp['test']['ids']
    # labels follow the CSV's hot column
    rows = _isic_rows(root); hot = {r[0]: rows[0][1:][r[1:].index('1.0')] for r in rows[1:]}
    assert [hot[i] for i in sp['train']['ids']] == [ISIC2019_CLASSES[l] for l in y]
    # a changed folder is refused rather than silently re-split
    _write_rows(root, rows[:-1])
    with pytest.raises(ValueError, match='split_seed0.json: the saved split does not match'): load_isic2019('train', root, size=20)

def test_isic_resized_pixels(tmp_path):
    root = make_fake_isic2019(tmp_path/'isic', n_per_class=4)
    x, _ = load_isic2019('test', root, size=16)
    sp = json.loads(next((tmp_path/'topocl-cache').glob('isic2019-*/split_seed0.json')).read_text())
    from PIL import Image
    ref = np.asarray(Image.open(root/'ISIC_2019_Training_Input'/f"{sp['test']['ids'][0]}.jpg").convert('RGB').resize((16, 16), Image.Resampling.BICUBIC))
    assert (np.asarray(x[0]) == ref).all()

def test_isic_missing_columns(tmp_path):
    root = make_fake_isic2019(tmp_path/'isic', n_per_class=4)
    rows = _isic_rows(root); assert rows[0][3] == 'BCC'
    _write_rows(root, [r[:3] + r[4:] for r in rows])
    with pytest.raises(ValueError, match=r"GroundTruth\.csv: missing column\(s\) \['BCC'\]"): load_isic2019('train', root)

@pytest.mark.parametrize('values', [['1.0', '1.0'], ['0.0', '0.0'], ['0.5', '0.5'], ['x', '0']])
def test_isic_not_one_hot(tmp_path, values):
    root = make_fake_isic2019(tmp_path/'isic', n_per_class=4)
    rows = _isic_rows(root); rows[3][1:3] = values; rows[3][3:] = ['0.0']*len(rows[3][3:])
    _write_rows(root, rows)
    with pytest.raises(ValueError, match=r'GroundTruth\.csv: line 4'): load_isic2019('train', root)

def test_isic_missing_and_unreadable_image(tmp_path):
    root = make_fake_isic2019(tmp_path/'isic', n_per_class=4)
    img = root/'ISIC_2019_Training_Input'/'ISIC_0000005.jpg'
    img.unlink()
    with pytest.raises(ValueError, match=r"line 7: image 'ISIC_0000005' is listed but no file .*ISIC_0000005\.jpg"):
        load_isic2019('train', root)
    img.write_bytes(b'\xff\xd8\xff\xe0 truncated jpeg')
    with pytest.raises(ValueError, match=r'ISIC_0000005\.jpg: unreadable image'):
        for s in SPLITS: load_isic2019(s, root, size=8)
    assert not list((tmp_path/'topocl-cache').rglob('*.tmp'))

def test_isic_no_csv(tmp_path):
    (tmp_path/'isic').mkdir()
    with pytest.raises(FileNotFoundError, match='ISIC_2019_Training_GroundTruth.csv'): load_isic2019('train', tmp_path/'isic')

def test_kvasir(tmp_path):
    root = make_fake_kvasir(tmp_path/'kv', n_per_class=10)
    (root/KVASIR_CLASSES[0]/'notes.txt').write_text('not an image')  # ignored: not an image suffix
    x, y = load_kvasir('train', root, size=16)
    assert x.shape == (21, 16, 16, 3) and np.bincount(y).tolist() == [7, 7, 7]
    d = describe_dataset('kvasir', root=root, size=16)
    assert d['classes'] == list(KVASIR_CLASSES[:3]) and d['splits']['test']['label_counts'] == {0: 2, 1: 2, 2: 2}
    r = prepare_dataset('kvasir', root=root, size=16)
    assert sorted(Path(p).name for p in r['written']) == ['test_seed0_16px.npy', 'val_seed0_16px.npy']
    ds = ImageDataset.from_name('kvasir', 'val', root=root, size=16)
    xb, yb, ib = next(iter(torch.utils.data.DataLoader(ds, batch_size=3, num_workers=0)))
    assert xb.shape == (3, 16, 16, 3) and xb.dtype == torch.uint8 and ib.tolist() == [0, 1, 2]

def test_kvasir_bad_folders(tmp_path):
    root = make_fake_kvasir(tmp_path/'kv', n_per_class=4)
    (root/'empty-class').mkdir()
    with pytest.raises(ValueError, match=r'empty-class: class folder holds no images'): load_kvasir('train', root)
    shutil.rmtree(root/'empty-class')
    bad = sorted((root/KVASIR_CLASSES[1]).iterdir())[0]
    bad.write_bytes(b'garbage')
    with pytest.raises(ValueError, match=re.escape(bad.name) + ': unreadable image'):
        for s in SPLITS: load_kvasir(s, root, size=8)
    one = make_fake_kvasir(tmp_path/'one', n_per_class=3, classes=('polyps',))
    with pytest.raises(ValueError, match='expected one sub-folder per class'): load_kvasir('train', one)
    with pytest.raises(FileNotFoundError, match='Kvasir folder not found'): load_kvasir('train', tmp_path/'nowhere')

def test_folder_too_small_to_stratify(tmp_path):
    root = make_fake_kvasir(tmp_path/'kv', n_per_class=1)
    with pytest.raises(ValueError, match='cannot make a stratified split'): load_kvasir('train', root)

# ---------------------------------------------------------------- load_dataset, describe, prepare

def test_load_dataset_dispatch(tmp_path):
    make_fake_medmnist(tmp_path, 'octmnist', counts=(8, 4, 4))
    x, y = load_dataset('octmnist', 'val', root=tmp_path)
    assert x.shape == (4, 28, 28) and y.dtype == np.int64
    with pytest.raises(ValueError, match='unknown dataset'): load_dataset('cifar10', 'train')
    with pytest.raises(FileNotFoundError, match="'pathmnist'"): describe_dataset('pathmnist', root=tmp_path)

def test_prepare_medmnist(tmp_path):
    make_fake_medmnist(tmp_path, 'bloodmnist', size=224, counts=(3, 2, 2))
    r = prepare_dataset('bloodmnist', root=tmp_path, size=224)
    assert sorted(Path(p).name for p in r['written']) == sorted(f'{s}_images.{e}' for s in SPLITS for e in ('npy', 'json'))
    assert prepare_dataset('bloodmnist', root=tmp_path, size=224)['written'] == []
    make_fake_medmnist(tmp_path, 'bloodmnist', counts=(3, 2, 2))
    assert prepare_dataset('bloodmnist', root=tmp_path, size=28)['written'] == []  # 28 px is read directly
    d = describe_dataset('bloodmnist', root=tmp_path, size=224)
    assert d['splits']['train']['image_shape'] == [224, 224, 3] and d['classes'][0] == 'basophil'

def test_options_checked(tmp_path):
    with pytest.raises(TypeError, match=r"synthetic: unexpected option\(s\) \['n'\]"): describe_dataset('synthetic', n=10)
    with pytest.raises(TypeError, match='unexpected option'): prepare_dataset('kvasir', root=tmp_path, size=8, rgb=True)

def test_unreadable_cache_records(tmp_path):
    "A damaged split file is refused with its name; a damaged conversion record just triggers a new conversion."
    root = make_fake_kvasir(tmp_path/'kv', n_per_class=4)
    load_kvasir('val', root, size=8)
    split_file = next((tmp_path/'topocl-cache').glob('kvasir-*/split_seed0.json'))
    split_file.write_text('{"train": 3}')
    with pytest.raises(ValueError, match='split_seed0.json: unreadable split file'): load_kvasir('val', root, size=8)
    make_fake_medmnist(tmp_path, 'breastmnist', size=128, counts=(3, 2, 2))
    x, _ = load_medmnist('breastmnist', 'val', root=tmp_path, size=128)
    meta = next((tmp_path/'topocl-cache').rglob('val_images.json'))
    meta.write_text('garbage')
    x2, _ = load_medmnist('breastmnist', 'val', root=tmp_path, size=128)
    assert (np.asarray(x2) == np.asarray(x)).all() and json.loads(meta.read_text())['bytes'] > 0


def test_medmnist_table_is_the_packages():
    "topocl reads medmnist's info.py without the package's __init__ (which imports scikit-learn): the same table."
    import medmnist.info
    from topocl.data import MEDMNIST_INFO
    assert MEDMNIST_INFO == medmnist.info.INFO
