"Shared pytest fixtures: the real-data folder beside the checkout, and the --runslow switch."
from pathlib import Path
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2]/'shared'/'data'  # <checkout>/../shared/data

def pytest_addoption(parser):
    parser.addoption('--runslow', action='store_true', default=False, help='also run tests marked slow')

# the longest files first (about 100, 70, 60 and 20 s): `--dist loadfile` hands each worker one file at a time in
# collection order, and a long file handed out last ran alone while the other worker idled
FIRST = ('test_sweep.py', 'test_cli.py', 'test_train.py', 'test_gpu_check.py')

def pytest_collection_modifyitems(config, items):
    rank = lambda item: FIRST.index(item.path.name) if item.path.name in FIRST else len(FIRST)
    items.sort(key=rank)   # stable: a file's tests keep their order
    if config.getoption('--runslow'): return
    skip = pytest.mark.skip(reason='slow: run with --runslow (make test-slow)')
    for item in items:
        if 'slow' in item.keywords: item.add_marker(skip)

@pytest.fixture
def shared_data() -> Path:
    "The shared real-data folder (`../shared/data`); skips the test when it is absent."
    if not (SHARED_DATA/'medmnist').is_dir():
        pytest.skip(f'real data folder {SHARED_DATA}/medmnist is absent (it sits beside the checkout in the project workspace)')
    return SHARED_DATA

@pytest.fixture
def medmnist_root(shared_data) -> Path:
    "The folder holding the official breastmnist.npz and pneumoniamnist.npz."
    return shared_data/'medmnist'

@pytest.fixture
def isolated_env(tmp_path, monkeypatch):
    "Point $TOPOCL_CACHE at a fresh folder and unset $TOPOCL_DATA, so a test never touches a user's cache or data."
    monkeypatch.setenv('TOPOCL_CACHE', str(tmp_path/'topocl-cache'))
    monkeypatch.delenv('TOPOCL_DATA', raising=False)
