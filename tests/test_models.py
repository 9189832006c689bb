"""Integration tests for topocl.encoders, topocl.moe and topocl.model: invariances, masks, gates,
gradients, determinism, checkpoints (atomic writes, bad files, pretrained loading) and real images."""
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from topocl.encoders import HierarchicalTopologyEncoder, VisualEncoder
from topocl.moe import EXPERTS, MoEFusion
from topocl.model import (ModelConfig, TopoCLModel, load_checkpoint, save_checkpoint, count_flops,
                          count_parameters, cost_breakdown)

torch.set_num_threads(1)
K0, K1 = 48, 96
SMALL = ModelConfig(arch="resnet18", in_chans=1, small_input=True)
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "medmnist"


def diagram_tokens(n0s, n1s, seed=0, junk=3.0):
    "Token batches with n0s[b] H0 and n1s[b] H1 points at the top of each block; padded rows hold junk."
    g = torch.Generator().manual_seed(seed)
    toks = torch.full((len(n0s), K0 + K1, 4), junk)
    pad = torch.ones(len(n0s), K0 + K1, dtype=torch.bool)
    for b, (n0, n1) in enumerate(zip(n0s, n1s)):
        for off, n, col in ((0, n0, 2), (K0, n1, 3)):
            bd = torch.rand(n, 2, generator=g).sort(-1).values
            toks[b, off:off + n, :2] = bd
            toks[b, off:off + n, 2:] = 0
            toks[b, off:off + n, col] = 1
            pad[b, off:off + n] = False
    return toks, pad


def within_dim_perm(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randperm(K0, generator=g), K0 + torch.randperm(K1, generator=g)])


@pytest.fixture(scope="module")
def topo():
    torch.manual_seed(0)
    return HierarchicalTopologyEncoder().eval()


@pytest.mark.parametrize("kw", [{}, {"self_attn": False}, {"cross_attn": False}, {"hierarchy": False}])
def test_permutation_within_dimension_invariance(kw):
    torch.manual_seed(0)
    enc = HierarchicalTopologyEncoder(**kw).eval()
    toks, pad = diagram_tokens([48, 17, 5], [96, 30, 1])
    with torch.no_grad():
        ref = enc(toks, pad)
        for seed in range(3):
            perm = within_dim_perm(seed)
            torch.testing.assert_close(enc(toks[:, perm], pad[:, perm]), ref, atol=1e-5, rtol=1e-5)


def test_permutation_across_dimensions_is_not_invariant(topo):
    # the split is positional: moving an H1 point into the H0 block changes the output (the test above can fail)
    toks, pad = diagram_tokens([5], [5])
    swapped_t, swapped_p = toks.clone(), pad.clone()
    swapped_t[0, [0, K0]] = toks[0, [K0, 0]]
    with torch.no_grad():
        assert (topo(swapped_t, swapped_p) - topo(toks, pad)).abs().max() > 1e-4


def test_padding_values_and_positions_do_not_matter(topo):
    toks, pad = diagram_tokens([7, 30], [12, 0])
    other = toks.clone()
    other[pad] = torch.randn(int(pad.sum()), 4) * 50
    perm = within_dim_perm(11)
    with torch.no_grad():
        ref = topo(toks, pad)
        torch.testing.assert_close(topo(other, pad), ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(topo(other[:, perm], pad[:, perm]), ref, atol=1e-5, rtol=1e-5)


def test_the_points_matter(topo):
    toks, pad = diagram_tokens([7], [12])
    moved = toks.clone()
    moved[0, K0 + 3, 1] += 0.2
    with torch.no_grad():
        assert (topo(moved, pad) - topo(toks, pad)).abs().max() > 1e-4


def test_empty_dimensions_are_finite_and_defined(topo):
    toks, pad = diagram_tokens([0, 0, 9, 0], [0, 0, 0, 9])
    with torch.no_grad():
        z = topo(toks, pad)
        assert torch.isfinite(z).all()
        # every fully empty diagram maps to proj(0)
        torch.testing.assert_close(z[0], z[1])
        torch.testing.assert_close(z[0], topo.proj(torch.zeros(1, 6 * 384))[0])
    topo.train()
    try:
        loss = topo(toks, pad).square().sum()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in topo.parameters() if p.grad is not None)
    finally:
        topo.zero_grad()
        topo.eval()


@pytest.mark.parametrize("bad, match", [
    (lambda t, p: (t[..., :2], p), r"\(B, 144, 4\)"),
    (lambda t, p: (t[:, :100], p[:, :100]), r"\(B, 144, 4\)"),
    (lambda t, p: (t, p[:, 1:]), "pad: expected shape"),
    (lambda t, p: (t, p[:1]), "pad: expected shape"),
    (lambda t, p: (t, p.float()), "bool"),
    (lambda t, p: (t.int(), p), "float"),
    (lambda t, p: (t[0], p[0]), r"\(B, 144, 4\)"),
])
def test_bad_tokens(topo, bad, match):
    toks, pad = diagram_tokens([3, 4], [5, 6])
    with pytest.raises(ValueError, match=match):
        topo(*bad(toks, pad))


def test_bad_images():
    enc = VisualEncoder("resnet18", in_chans=1, small_input=True)
    with pytest.raises(ValueError, match="channel"):
        enc(torch.rand(2, 3, 28, 28))
    with pytest.raises(ValueError, match="floats"):
        enc(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))


@pytest.mark.parametrize("B", [1, 3])
def test_fused_shapes_gates_and_gradients(B):
    torch.manual_seed(0)
    model = TopoCLModel(SMALL)
    images = torch.rand(B, 1, 28, 28)
    toks, pad = diagram_tokens([10] * B, [4] * B)
    out = model(images, toks, pad, return_gates=True)
    assert out.z.shape == (B, 128) and out.gates.shape == (B, 5) and out.fused.shape == (B, 512)
    assert (out.gates > 0).all()
    torch.testing.assert_close(out.gates.sum(-1), torch.ones(B))
    out.z.square().mean().backward()
    for name in EXPERTS:
        grads = [p.grad for p in model.fusion.mlps[name].parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), name
    dead = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert dead == []


@pytest.mark.parametrize("drop", EXPERTS)
def test_expert_ablation_gate_over_the_rest(drop):
    keep = tuple(e for e in EXPERTS if e != drop)
    torch.manual_seed(0)
    moe = MoEFusion(512, 256, experts=keep)
    out = moe(torch.randn(4, 512), torch.randn(4, 256))
    assert out.gates.shape == (4, 4)
    torch.testing.assert_close(out.gates.sum(-1), torch.ones(4))
    assert drop not in moe.mlps


def test_deterministic_under_seed():
    images = torch.rand(2, 1, 28, 28)
    toks, pad = diagram_tokens([10, 3], [4, 0])

    def run(seed):
        torch.manual_seed(seed)
        m = TopoCLModel(SMALL).eval()
        with torch.no_grad():
            return m(images, toks, pad)
    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_checkpoint_roundtrip_and_atomicity(tmp_path, monkeypatch):
    torch.manual_seed(0)
    cfg = replace(SMALL, experts=("visual", "gated", "cross_attn"), cross_attn=False)
    model = TopoCLModel(cfg).eval()
    path = save_checkpoint(model, tmp_path / "ck" / "m.pt", extra={"epoch": 2, "opt": {"lr": torch.tensor(0.1)}})
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]
    loaded, extra = load_checkpoint(path, expect=cfg, return_extra=True)
    assert loaded.config == cfg and extra["epoch"] == 2 and float(extra["opt"]["lr"]) == pytest.approx(0.1)
    images, (toks, pad) = torch.rand(2, 1, 28, 28), diagram_tokens([5, 6], [7, 0])
    with torch.no_grad():
        assert torch.equal(loaded.eval()(images, toks, pad), model(images, toks, pad))

    # a failed write leaves the previous checkpoint intact and no temporary file behind
    before = path.read_bytes()
    def boom(*a, **k): raise OSError("disk full")
    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(model, path)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]


def test_checkpoint_errors(tmp_path):
    model = TopoCLModel(replace(SMALL, kind="topology"))
    path = model.save_checkpoint(tmp_path / "t.pt")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(ValueError, match="cut.pt"):
        load_checkpoint(tmp_path / "cut.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="text.pt"):
        load_checkpoint(tmp_path / "text.pt")
    torch.save({"model": {}}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a TopoCL model checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    ck = torch.load(path, weights_only=True)
    for name, change, match in [("v.pt", {"version": 99}, "version 99"),
                                ("cfg.pt", {"config": {**ck["config"], "depth": 3}}, "unknown field"),
                                ("w.pt", {"config": {**ck["config"], "topo_out": 128}}, "weights do not fit")]:
        torch.save({**ck, **change}, tmp_path / name)
        with pytest.raises(ValueError, match=match):
            load_checkpoint(tmp_path / name)
    with pytest.raises(ValueError, match="hierarchy: checkpoint True, expected False"):
        load_checkpoint(path, expect=replace(model.config, hierarchy=False))


def test_load_pretrained_from_stage_checkpoints(tmp_path):
    torch.manual_seed(3)
    s1 = TopoCLModel(replace(SMALL, kind="visual")).eval()
    s2 = TopoCLModel(replace(SMALL, kind="topology")).eval()
    p1, p2 = s1.save_checkpoint(tmp_path / "s1.pt"), s2.save_checkpoint(tmp_path / "s2.pt")
    fused = TopoCLModel(SMALL).load_pretrained(visual=p1, topology=p2).eval()
    images, (toks, pad) = torch.rand(3, 1, 28, 28), diagram_tokens([5, 6, 1], [7, 0, 2])
    with torch.no_grad():
        assert torch.equal(fused.forward_visual(images), s1(images))
        assert torch.equal(fused.forward_topology(toks, pad), s2(toks, pad))
    # and the fused model round-trips, then serves as a source of either encoder
    p3 = fused.save_checkpoint(tmp_path / "s3.pt")
    again = TopoCLModel(replace(SMALL, kind="visual")).load_pretrained(visual=p3).eval()
    with torch.no_grad():
        assert torch.equal(again(images), s1(images))
    with pytest.raises(ValueError, match="in_chans: checkpoint 1, expected 3"):
        TopoCLModel(replace(SMALL, in_chans=3)).load_pretrained(visual=p1)
    with pytest.raises(ValueError, match="holds no visual encoder"):
        TopoCLModel(SMALL).load_pretrained(visual=p2)
    with pytest.raises(ValueError, match="self_attn"):
        TopoCLModel(replace(SMALL, self_attn=False)).load_pretrained(topology=p2)


def test_cost_helpers_restore_mode_and_count():
    m = TopoCLModel(replace(SMALL, kind="topology")).train()
    flops = count_flops(m, torch.rand(1, K0 + K1, 4))
    assert m.training and flops > 0
    rows = {r["part"]: r for r in cost_breakdown(SMALL, image_size=28)}
    assert rows["Total"]["params"] == count_parameters(TopoCLModel(SMALL))
    with pytest.raises(ValueError, match="fused"):
        cost_breakdown(replace(SMALL, kind="visual"))


def test_real_medmnist_images_through_the_fused_model():
    path = DATA / "breastmnist.npz"
    if not path.exists():
        pytest.skip(f"real data absent: {path} (the shared MedMNIST files are not in this checkout)")
    with np.load(path) as f:
        imgs = f["train_images"][:6]
    assert imgs.dtype == np.uint8 and imgs.shape[1:] == (28, 28)
    images = torch.from_numpy(imgs).float().div(255).unsqueeze(1)
    torch.manual_seed(0)
    model = TopoCLModel(SMALL).eval()
    toks, pad = diagram_tokens([12] * 6, [5] * 6)
    with torch.no_grad():
        out = model(images, toks, pad, return_gates=True)
        feats = model.forward_visual(images)
    assert torch.isfinite(out.z).all() and torch.isfinite(feats).all()
    # distinct images give distinct features
    assert torch.cdist(feats, feats).fill_diagonal_(1.0).min() > 0


def test_train_and_eval_paths_agree(topo):
    # eval + no_grad takes PyTorch's fused attention fast path; it must agree with the training path
    toks, pad = diagram_tokens([48, 9, 0, 2], [96, 0, 0, 40])
    topo.train()
    try:
        slow = topo(toks, pad).detach()
    finally:
        topo.eval()
    with torch.no_grad():
        torch.testing.assert_close(topo(toks, pad), slow, atol=1e-5, rtol=1e-5)
