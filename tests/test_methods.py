"Integration tests of topocl.methods: two-process DDP (gloo, CPU), exact resume, mixed precision, bad input."
import io
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

from topocl.methods import METHODS, MomentumMethod, make_method

WORLD, BATCH, IN, D = 2, 8, 6, 5  # processes, global batch, input and feature sizes


@pytest.fixture(autouse=True)
def _one_thread():
    "Tiny tensors: on a shared 2-core machine threads cost far more than they give."
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _views():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, IN, generator=g)
    return x + 0.1 * torch.randn(BATCH, IN, generator=g), x + 0.1 * torch.randn(BATCH, IN, generator=g)


def _build(name):
    "The same method in every process: a linear encoder and no projector, so no BatchNorm sees the local batch."
    torch.manual_seed(1)
    m = make_method(name, nn.Linear(IN, D), D, projector=False, **({'n_prototypes': 7} if name == 'dino' else {}))
    # the BYOL and MoCo-v3 predictors keep BatchNorm: in eval mode it uses fixed statistics, identical in both settings
    if name in ('byol', 'mocov3'): m.eval()
    return m


def _step(model, method, v1, v2):
    loss = model(v1, v2)
    loss.backward()
    grads = {k: p.grad.clone() for k, p in method.named_parameters() if p.requires_grad}
    center = method.center.value.clone() if hasattr(method, 'center') else None
    return loss.detach(), grads, center


def _ddp_worker(rank, store, out):
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{store}', rank=rank, world_size=WORLD)
    try:
        v1, v2 = _views()
        part = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
        results = {}
        for name in METHODS:
            method = _build(name)
            loss, grads, center = _step(DDP(method), method, v1[part], v2[part])  # DDP averages the gradients
            dist.all_reduce(loss)
            results[name] = (loss / WORLD, grads, center)
        if rank == 0: torch.save(results, out)
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_match_one_process_on_the_whole_batch(tmp_path):
    "Gathered negatives (NT-Xent, MoCo-v3), the gathered cross-correlation (Barlow Twins) and DINO's all-reduced centre."
    out = tmp_path / 'ddp.pt'
    mp.spawn(_ddp_worker, args=(str(tmp_path / 'store'), str(out)), nprocs=WORLD, join=True)
    ddp = torch.load(out)
    v1, v2 = _views()
    for name in METHODS:
        method = _build(name)
        loss, grads, center = _step(method, method, v1, v2)
        dloss, dgrads, dcenter = ddp[name]
        torch.testing.assert_close(dloss, loss, msg=f'{name}: loss')
        assert grads.keys() == dgrads.keys()
        for k in grads: torch.testing.assert_close(dgrads[k], grads[k], msg=f'{name}: gradient of {k}')
        if center is not None: torch.testing.assert_close(dcenter, center, msg=f'{name}: centre')


def test_without_gathering_ddp_loss_differs(tmp_path):
    "The test above can fail: with per-process negatives the contrastive loss is not the global one."
    v1, v2 = _views()
    whole = _build('simclr')(v1, v2)
    torch.manual_seed(1)
    halves = make_method('simclr', nn.Linear(IN, D), D, projector=False)
    local = (halves(v1[:4], v2[:4]) + halves(v1[4:], v2[4:])) / 2
    assert not torch.allclose(local, whole)


def _toy_method(name):
    torch.manual_seed(0)
    enc = nn.Sequential(nn.Linear(IN, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, D))
    m = make_method(name, enc, D, proj_dim=8, hidden_dim=16, **({'n_prototypes': 32} if name == 'dino' else {}))
    return m, torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)


def _train(m, opt, steps, total):
    for s in steps:
        g = torch.Generator().manual_seed(s)
        x = torch.randn(16, IN, generator=g)
        loss = m(x + 0.1 * torch.randn(16, IN, generator=g), x + 0.1 * torch.randn(16, IN, generator=g))
        opt.zero_grad(); loss.backward(); opt.step(); m.on_step_end(s, total)


@pytest.mark.parametrize('name', list(METHODS))
def test_resume_from_state_dict_is_exact(name):
    "Targets, BatchNorm statistics, DINO's centre and teacher temperature all live in `state_dict()`."
    m, opt = _toy_method(name)
    _train(m, opt, range(6), 6)
    a, opt_a = _toy_method(name)
    _train(a, opt_a, range(3), 6)
    buf = io.BytesIO()
    torch.save({'method': a.state_dict(), 'opt': opt_a.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    b, opt_b = _toy_method(name)
    _train(b, opt_b, range(2), 6)  # a different state, to be overwritten
    b.load_state_dict(state['method']); opt_b.load_state_dict(state['opt'])
    _train(b, opt_b, range(3, 6), 6)
    for (k, x), y in zip(m.state_dict().items(), b.state_dict().values()):
        if isinstance(x, torch.Tensor): assert torch.equal(x, y), f'{name}: {k} differs after resume'
    if name == 'dino': assert b.teacher_temp_now == m.teacher_temp_now


@pytest.mark.parametrize('name', list(METHODS))
def test_losses_run_in_float32_under_autocast(name):
    m, _ = _toy_method(name)
    x = torch.randn(16, IN)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss = m(x, x + 0.1 * torch.randn_like(x))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()


def test_probe_encoder_and_targets():
    for name in METHODS:
        m, _ = _toy_method(name)
        if name == 'dino': assert m.probe_encoder is m.target_encoder  # DINO evaluates its teacher
        else: assert m.probe_encoder is m.encoder
        assert isinstance(m, MomentumMethod) == (name in ('mocov3', 'byol', 'dino'))
        if isinstance(m, MomentumMethod):
            assert any(k.startswith('target_encoder.') for k in m.state_dict())


class _TupleEncoder(nn.Module):
    def forward(self, x): return x, x


def test_bad_input():
    m, _ = _toy_method('byol')
    with pytest.raises(ValueError, match=r'step=6 must be in \[0, 6\)'): m.on_step_end(6, 6)
    with pytest.raises(ValueError, match='total_steps=0'): m.on_step_end(0, 0)
    with pytest.raises(ValueError, match=r'encoder\(\*view\) must return a \(batch, in_dim=5\) tensor, got tuple'):
        make_method('simclr', _TupleEncoder(), 5)(torch.randn(4, 5), torch.randn(4, 5))
    with pytest.raises(ValueError, match="unknown SSL method 'swav'"): make_method('swav', nn.Identity(), 5)
    with pytest.raises(ValueError, match='lambda_param=-1'): make_method('barlowtwins', nn.Identity(), 5, lambda_param=-1)
    with pytest.raises(TypeError, match='a view must be'): m(None, None)
