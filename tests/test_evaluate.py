"""Integration tests of topocl.evaluate: probe sanity on random and leaked features, metrics against sklearn/scipy,
seeds and t-tests, atomic result tables, gate statistics, and probes on the real MedMNIST files."""
import json, math, os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from topocl.probe import accuracy, auc_score, standardize, linear_probe, LinearProbeConfig
from topocl.statistics import null_auc_sd, summarize, paired_ttest, compare_variants, save_table
from topocl.evaluate import gate_stats, plot_gates


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    "Tiny models and batches run fastest on one torch thread, above all on a shared 2-core machine."
    import torch
    old = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def splits(make, sizes=(800, 300, 1000), seed=0):
    "Three splits drawn by `make(rng, n) -> (X, y)`."
    rng = np.random.default_rng(seed)
    return [a for n in sizes for a in make(rng, n)]


# ---- metrics ---------------------------------------------------------------------------------------------------

def test_auc_matches_sklearn_binary_and_multiclass():
    rng = np.random.default_rng(1)
    y2 = rng.integers(0, 2, 200); p = rng.random(200)
    assert auc_score(y2, np.stack([1 - p, p], 1)) == pytest.approx(roc_auc_score(y2, p))
    y4 = rng.integers(0, 4, 300); P = rng.dirichlet(np.ones(4), 300).astype(np.float32)  # float32 rows: renormalised
    want = np.mean([roc_auc_score(y4 == c, P[:, c]) for c in range(4)])  # one-vs-rest, macro
    assert auc_score(y4, P) == pytest.approx(want)
    assert accuracy(y4, P) == pytest.approx(np.mean(P.argmax(1) == y4))


def test_auc_missing_class_is_a_clear_error():
    y = np.array([0, 1, 1, 0, 1]); P = np.full((5, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"class\(es\) \[2\] of 3"):
        auc_score(y, P)
    assert math.isnan(auc_score(y, P, on_missing="nan"))
    with pytest.raises(ValueError, match="probs must be"):
        auc_score(y, P[:3])


def test_standardize_uses_train_statistics_only():
    rng = np.random.default_rng(2)
    tr, te = rng.normal(3, 2, (500, 5)), rng.normal(10, 2, (100, 5))
    a, b = standardize(tr, te)
    assert np.allclose(a.mean(0), 0, atol=1e-5)
    assert np.allclose(b.mean(0), (te.mean(0) - tr.mean(0)) / tr.std(0), atol=1e-4)  # shifted, not re-centred


# ---- probe sanity ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1])
def test_probe_random_features_score_chance(seed):
    "Balanced binary labels, features independent of them: ACC and AUC within 4 null standard deviations of 0.5."
    X1, y1, X2, y2, X3, y3 = splits(lambda r, n: (r.normal(size=(n, 32)), r.integers(0, 2, n)), seed=seed)
    res = linear_probe(X1, y1, X2, y2, X3, y3, epochs=15)
    n1 = int(y3.sum()); n0 = len(y3) - n1
    assert abs(res.test_acc - 0.5) < 4 * math.sqrt(0.25 / len(y3))
    assert abs(res.test_auc - 0.5) < 4 * null_auc_sd(n0, n1)


def test_probe_random_features_imbalanced_not_above_majority():
    "With 80/20 labels a useless probe cannot beat always predicting the majority class by more than noise."
    X1, y1, X2, y2, X3, y3 = splits(lambda r, n: (r.normal(size=(n, 16)), (r.random(n) < 0.2).astype(int)), seed=3)
    res = linear_probe(X1, y1, X2, y2, X3, y3, epochs=15)
    majority = max(y3.mean(), 1 - y3.mean())
    assert res.test_acc < majority + 4 * math.sqrt(majority * (1 - majority) / len(y3))
    n1 = int(y3.sum())
    assert abs(res.test_auc - 0.5) < 4 * null_auc_sd(len(y3) - n1, n1)


def test_probe_leaked_labels_score_near_perfect():
    leak = lambda r, n: (lambda y: (np.concatenate([np.eye(5)[y], r.normal(size=(n, 10))], 1), y))(r.integers(0, 5, n))
    X1, y1, X2, y2, X3, y3 = splits(leak, sizes=(500, 200, 500), seed=4)
    res = linear_probe(X1, y1, X2, y2, X3, y3, epochs=20)
    assert res.test_acc > 0.99 and res.test_auc > 0.999


def test_probe_selects_on_validation_not_test():
    "Validation and test disagree on purpose (test labels flipped): the chosen epoch must be the validation optimum."
    rng = np.random.default_rng(5)
    def blobs(n):
        y = rng.integers(0, 2, n); X = rng.normal(size=(n, 8)); X[:, 0] += 3 * y; return X, y
    (X1, y1), (X2, y2), (X3, y3) = blobs(400), blobs(200), blobs(300)
    res = linear_probe(X1, y1, X2, y2, X3, 1 - y3, epochs=10)
    best = res.curves.sort_values(["val_acc", "val_loss"], ascending=[False, True]).iloc[0]
    assert (res.lr, res.weight_decay, res.epoch) == (best.lr, best.weight_decay, best.epoch)
    assert res.val_acc > 0.8 and res.test_acc < 0.2  # the flipped test split is scored once, honestly
    assert set(res.curves.columns) >= {"lr", "weight_decay", "epoch", "train_loss", "val_loss", "val_acc", "val_auc"}
    d = res.to_dict(); json.dumps(d)
    assert "curves" not in d and d["n_test"] == 300


def shifted(r, n):
    "Binary labels, 4 features shifted by the label: learnable but not separable."
    y = r.integers(0, 2, n)
    return r.normal(size=(n, 4)) + y[:, None], y


def test_probe_select_auc_and_loss():
    X1, y1, X2, y2, X3, y3 = splits(shifted, sizes=(300, 100, 100), seed=6)
    res = linear_probe(X1, y1, X2, y2, X3, y3, epochs=5, select="auc")
    assert res.val_auc == res.curves.val_auc.max()
    res = linear_probe(X1, y1, X2, y2, X3, y3, epochs=5, select="loss")
    assert res.curves.set_index(["lr", "weight_decay", "epoch"]).val_loss.idxmin() == (res.lr, res.weight_decay, res.epoch)


def test_probe_bad_input():
    rng = np.random.default_rng(7)
    X, y = rng.normal(size=(50, 3)), rng.integers(0, 2, 50)
    with pytest.raises(ValueError, match="val_labels"):
        linear_probe(X, y, X, y[:10], X, y)
    with pytest.raises(ValueError, match="train_feats must be"):
        linear_probe(X[:, 0], y, X, y, X, y)
    with pytest.raises(ValueError, match="non-negative integers"):
        linear_probe(X, y.astype(float), X, y, X, y)
    with pytest.raises(ValueError, match=r"test split lacks class\(es\) \[1\]"):
        linear_probe(X, y, X, y, X, np.zeros(50, int))
    bad = X.copy(); bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="test_feats contain NaN"):
        linear_probe(X, y, X, y, bad, y)
    with pytest.raises(ValueError, match="select='auc'"):
        linear_probe(X, y, X, np.zeros(50, int), X, y, select="auc")
    with pytest.raises(ValueError, match=r"unknown linear probe setting\(s\) \['lr'\]"):
        linear_probe(X, y, X, y, X, y, dict(lr=0.1))
    with pytest.raises(TypeError, match="expected a LinearProbeConfig"):
        linear_probe(X, y, X, y, X, y, 5)


def test_probe_deterministic_and_thread_count_restored():
    import torch
    X1, y1, X2, y2, X3, y3 = splits(lambda r, n: (r.normal(size=(n, 6)), r.integers(0, 3, n)), sizes=(200, 60, 90))
    before = torch.get_num_threads()
    a = linear_probe(X1, y1, X2, y2, X3, y3, epochs=5)
    b = linear_probe(X1, y1, X2, y2, X3, y3, epochs=5)
    assert torch.get_num_threads() == before
    assert np.array_equal(a.test_probs, b.test_probs) and a.curves.equals(b.curves)
    # the same settings as a config, as a dict, or as a config with keyword changes: the same probe
    for c in (linear_probe(X1, y1, X2, y2, X3, y3, LinearProbeConfig(epochs=5)),
              linear_probe(X1, y1, X2, y2, X3, y3, dict(epochs=5)),
              linear_probe(X1, y1, X2, y2, X3, y3, LinearProbeConfig(epochs=9, seed=4), epochs=5, seed=0)):
        assert np.array_equal(a.test_probs, c.test_probs) and a.curves.equals(c.curves)


# ---- seeds, t-tests, tables ------------------------------------------------------------------------------------

def records(n_seeds=5, gain=0.03, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for ds in ("breastmnist", "pneumoniamnist"):
        for s in range(n_seeds):
            shared = rng.normal(0, 0.02)  # a seed effect both variants share: what pairing removes
            for v in ("baseline", "topocl"):
                out.append(dict(dataset=ds, method="simclr", variant=v, seed=s,
                                acc=0.8 + shared + gain * (v == "topocl") + rng.normal(0, 0.005),
                                auc=0.9 + shared + rng.normal(0, 0.005)))
    return out


def test_summarize_mean_std_n():
    recs = records()
    s = summarize(recs)
    assert len(s) == 4 and (s.n_seeds == 5).all()
    df = pd.DataFrame(recs)
    sel = df[(df.dataset == "pneumoniamnist") & (df.variant == "topocl")]
    row = s[(s.dataset == "pneumoniamnist") & (s.variant == "topocl")].iloc[0]
    assert row.acc_mean == pytest.approx(sel.acc.mean()) and row.acc_std == pytest.approx(sel.acc.std(ddof=1))
    with pytest.raises(ValueError, match="metric column"):
        summarize(recs, metrics=("f1",))
    with pytest.raises(ValueError, match="no results"):
        summarize([])


def test_paired_ttest_matches_scipy_and_edge_cases():
    rng = np.random.default_rng(8)
    a, b = rng.normal(0.8, 0.01, 5), rng.normal(0.79, 0.01, 5)
    r = paired_ttest(a, b)
    ref = stats.ttest_rel(a, b)
    assert r["t"] == pytest.approx(ref.statistic) and r["p"] == pytest.approx(ref.pvalue) and r["n"] == 5
    one = paired_ttest([0.8], [0.7])
    assert math.isnan(one["p"]) and "no t-test" in one["note"] and one["mean_diff"] == pytest.approx(0.1)
    same = paired_ttest([0.8, 0.7], [0.8, 0.7])
    assert math.isnan(same["t"]) and math.isnan(same["p"]) and "identical" in same["note"]
    const = paired_ttest([0.5, 0.25], [0.25, 0.0])  # exactly representable: the same difference on both seeds
    # no spread to test against: reported as such, never as p = 0
    assert math.isnan(const["t"]) and math.isnan(const["p"]) and "zero variance" in const["note"]
    assert const["mean_diff"] == pytest.approx(0.25)


def test_compare_variants_detects_a_real_gain_and_not_a_null_one():
    cmp = compare_variants(records(gain=0.03)).set_index(["dataset", "metric"])
    assert (cmp.xs("acc", level="metric").p < 0.01).all()           # +3 points, 5 paired seeds
    assert (cmp.xs("acc", level="metric")["diff"] > 0.02).all()
    null = compare_variants(records(gain=0.0, seed=1))
    assert (null.p > 0.001).all()                                    # no effect: no tiny p-values
    assert set(null.columns) >= {"baseline_mean", "baseline_std", "topocl_mean", "topocl_std", "diff", "t", "p", "n_pairs"}


def test_compare_variants_pairs_by_seed():
    recs = [r for r in records(n_seeds=3) if not (r["variant"] == "topocl" and r["seed"] == 0)]
    cmp = compare_variants(recs)
    assert (cmp.n_pairs == 2).all() and cmp.note.str.contains(r"unpaired seeds \[0\]").all()
    df = pd.DataFrame(records(n_seeds=3))
    t = df[df.variant == "topocl"].set_index(["dataset", "seed"]).acc
    b = df[df.variant == "baseline"].set_index(["dataset", "seed"]).acc
    for seed_order in ([2, 0, 1],):  # record order must not matter: pairing is by seed
        shuffled = pd.concat([df[df.seed == s] for s in seed_order])
        got = compare_variants(shuffled).set_index(["dataset", "metric"]).loc[("breastmnist", "acc"), "p"]
        assert got == pytest.approx(stats.ttest_rel(t["breastmnist"], b["breastmnist"]).pvalue)
    dup = records(n_seeds=2) + records(n_seeds=1)
    with pytest.raises(ValueError, match="seed appears twice"):
        compare_variants(dup)


def test_save_table_atomic_and_roundtrip(tmp_path):
    cmp = compare_variants(records())
    jp, cp = save_table(cmp, tmp_path / "out" / "results.json")   # suffix replaced: results.json + results.csv
    assert jp.name == "results.json" and cp.name == "results.csv"
    back = pd.DataFrame(json.loads(jp.read_text()))
    assert np.allclose(back.p, cmp.p) and list(back.columns) == list(cmp.columns)
    assert pd.read_csv(cp).shape == cmp.shape
    save_table(cmp.head(1), tmp_path / "out" / "results")            # overwrite in place
    assert len(json.loads(jp.read_text())) == 1
    assert sorted(os.listdir(tmp_path / "out")) == ["results.csv", "results.json"]  # no temporary files left
    one = compare_variants(records(n_seeds=1))                        # nan p-values become JSON null
    jp, _ = save_table(one, tmp_path / "one")
    assert json.loads(jp.read_text())[0]["p"] is None


# ---- gates -----------------------------------------------------------------------------------------------------

def test_gate_stats_and_plot():
    import matplotlib; matplotlib.use("Agg")
    import torch
    rng = np.random.default_rng(9)
    g = {"a": rng.dirichlet([1, 5, 1, 1, 1], 300), "b": torch.softmax(torch.randn(200, 5), 1)}
    s = gate_stats(g)
    assert len(s) == 10 and set(s.columns) == {"dataset", "expert", "mean", "std", "n"}
    assert s[s.dataset == "a"].set_index("expert")["mean"].idxmax() == "topology"
    assert np.allclose(s.groupby("dataset")["mean"].sum(), 1.0)
    ax = plot_gates(s)
    assert len(ax.patches) >= 10
    two = gate_stats({"x": rng.dirichlet([1, 1], 10)}, expert_names=("visual", "cross_attn"))
    assert two.expert.tolist() == ["visual", "cross_attn"]
    with pytest.raises(ValueError, match="sum to 1"):
        gate_stats({"x": rng.random((5, 5)) + 1})


# ---- real data ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag,epochs", [("breastmnist", 30), ("pneumoniamnist", 10)])
def test_probe_raw_pixels_on_medmnist(flag, epochs, medmnist_root):
    """Raw pixels are a weak but real representation: AUC far above chance.
    (No shuffled-label check here: on PneumoniaMNIST a probe fitted to shuffled training labels still reaches test
    AUC ~0.7, because validation picks, among noise-fitted classifiers, one whose direction follows the brightness
    signal the pixels carry. The null check of the probe is the random-features test above.)"""
    d = np.load(medmnist_root / f"{flag}.npz")
    f = lambda s: (d[f"{s}_images"].reshape(len(d[f"{s}_images"]), -1) / 255.0, d[f"{s}_labels"].ravel().astype(np.int64))
    (X1, y1), (X2, y2), (X3, y3) = f("train"), f("val"), f("test")
    n1 = int(y3.sum()); tol = 4 * null_auc_sd(len(y3) - n1, n1)
    res = linear_probe(X1, y1, X2, y2, X3, y3, epochs=epochs)
    assert res.test_auc > 0.5 + tol and res.test_auc > 0.75, res


# ---- features, tokens, models, checkpoints ---------------------------------------------------------------------

TINY = dict(arch="resnet18", in_chans=1, small_input=False, topo_dim=32, topo_heads=2, topo_out=32,
            fusion_dim=32, expert_dim=48, hidden=32, embed_dim=16)


@pytest.fixture(scope="module")
def fused():
    import torch
    from topocl.model import TopoCLModel
    torch.manual_seed(0)
    return TopoCLModel(kind="fused", **TINY)


def test_preprocess_matches_training_eval_transform():
    import torch
    from topocl.augment import VisualAugment
    from topocl.features import preprocess
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    aug = VisualAugment(32, 1, "none", ((0.4,), (0.2,)))
    assert torch.allclose(preprocess(gray, 1, 32, ((0.4,), (0.2,))), torch.stack([aug(g) for g in gray]))
    fl = gray.astype(np.float32) / 255
    assert torch.equal(preprocess(fl, 1), preprocess(gray, 1))
    with pytest.raises(ValueError, match="channel"):
        preprocess(gray, 3)


def test_extract_features_kinds_and_gates(fused):
    import torch
    from topocl.features import extract_features, preprocess, FeatureOptions
    from topocl.data import make_synthetic
    s = make_synthetic(6, size=28, seed=1)
    tok, pad = torch.rand(6, 144, 4), torch.zeros(6, 144, dtype=torch.bool)
    pad[:, 100:] = True
    f = extract_features(fused, s.images, "fused", tok, pad, options=FeatureOptions(batch_size=4))
    assert f.feats.shape == (6, 48) and f.feats.dtype == np.float32 and np.allclose(f.gates.sum(1), 1, atol=1e-5)
    fused.eval()
    with torch.no_grad():
        out = fused.fuse(preprocess(s.images, 1), tok, pad)
        topo = fused.forward_topology(tok, pad)
    fused.train()
    assert np.allclose(f.feats, out.fused.numpy(), atol=1e-4) and np.allclose(f.gates, out.gates.numpy(), atol=1e-5)
    t = extract_features(fused, None, "topology", tok, pad)
    assert t.feats.shape == (6, 32) and np.allclose(t.feats, topo.numpy(), atol=1e-4)
    # padded tokens do not matter: changing them leaves the features unchanged
    tok2 = tok.clone(); tok2[:, 100:] = 7.0
    assert np.allclose(extract_features(fused, s.images, "fused", tok2, pad).feats, f.feats, atol=1e-4)
    with pytest.raises(ValueError, match=r"tokens: expected shape \(6, 144, 4\)"):
        extract_features(fused, s.images, "fused", tok[:, :100], pad)
    with pytest.raises(ValueError, match="kind"):
        extract_features(fused, s.images, "embedding")


def test_split_tokens_see_topology_and_use_the_cache(tmp_path):  # TokenMaker.split, what probes use
    "Un-augmented ROI diagrams: rings (class 2) have a long H1 bar, blobs (class 0) do not; cached runs agree."
    import torch
    from topocl.data import make_synthetic
    from topocl.persistence import TokenMaker
    s = make_synthetic(40, size=28, seed=2)
    maker = TokenMaker(roi="otsu")
    tk = maker.split(s.images)
    assert tk.tokens.shape == (40, 144, 4) and tk.pad.shape == (40, 144)
    h1 = (tk.tokens[:, 48, 1] - tk.tokens[:, 48, 0]).numpy() * ~tk.pad[:, 48].numpy()
    assert h1[s.labels == 2].mean() > h1[s.labels == 0].mean() + 0.1
    key = dict(dataset="synthetic-test", split="train", size=28)
    a = maker.split(s.images, cache_dir=tmp_path, cache_key=key)
    assert torch.equal(a.tokens, tk.tokens) and any(tmp_path.iterdir())
    b = maker.split(s.images, cache_dir=tmp_path, cache_key=key)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.pad, b.pad)


def test_topological_tokens_carry_the_synthetic_labels():
    "A probe on persistence values of the un-augmented ROI diagrams separates blobs from rings."
    from topocl.data import make_synthetic
    from topocl.persistence import TokenMaker
    feats = []
    for seed, n in ((10, 200), (11, 80), (12, 120)):
        s = make_synthetic(n, size=28, seed=seed, n_classes=4)
        keep = np.isin(s.labels, (0, 2))  # one blob vs one ring: same components, different holes
        tk = TokenMaker(roi="otsu").split(s.images[keep])
        pers = (tk.tokens[..., 1] - tk.tokens[..., 0]).numpy()
        feats += [pers, (s.labels[keep] == 2).astype(np.int64)]
    res = linear_probe(*feats, epochs=30)
    assert res.test_acc > 0.85, res


def test_probe_model_and_checkpoint_roundtrip(tmp_path, fused, isolated_env):
    import torch
    from topocl.evaluate import probe_model, probe_checkpoint, load_splits, ProbeSettings
    from topocl.features import FeatureOptions
    from topocl.model import save_checkpoint
    from topocl.moe import EXPERTS
    sp = load_splits("synthetic", limit=12)
    assert {k: len(v[0]) for k, v in sp.items()} == {"train": 12, "val": 12, "test": 12}
    four, cpu = LinearProbeConfig(epochs=4), FeatureOptions(device="cpu")
    rec, det = probe_model(fused, sp, probe=dict(epochs=4), return_details=True)
    assert rec["kind"] == "fused" and rec["n_train"] == 12 and rec["feature_dim"] == 48
    assert set(rec["gate_mean"]) == set(EXPERTS) and sum(rec["gate_mean"].values()) == pytest.approx(1, abs=1e-4)
    json.dumps(rec)
    sup = dict(filtration="superlevel")
    ck = save_checkpoint(fused, tmp_path / "m.pt", extra=dict(roi="full", persistence=sup))
    r = probe_checkpoint(ck, probe=four, options=cpu, splits=sp, tokens=None, dataset="synthetic")
    assert (r["roi"], r["persistence"]["filtration"], r["model_kind"], r["checkpoint"]) == ("full", "superlevel", "fused", str(ck))
    # a reloaded checkpoint gives the same features, hence the same probe, as the model it was saved from
    same = probe_model(fused, sp, settings=ProbeSettings(roi="full", persistence=sup), probe=four)
    assert r["test_acc"] == same["test_acc"] and r["val_acc"] == same["val_acc"]
    assert (rec["probe_seed"], probe_model(fused, sp, probe=dict(epochs=4, seed=3))["probe_seed"]) == (0, 3)
    v = probe_checkpoint(ck, "visual", four, cpu, splits=sp, dataset="synthetic", roi="otsu")
    assert v["roi"] == "otsu"                                   # explicit settings win over the checkpoint's
    assert v["kind"] == "visual" and v["feature_dim"] == 512 and "gate_mean" not in v
    with pytest.raises(ValueError, match="unknown setting"):
        probe_checkpoint(ck, splits=sp, dataset="synthetic", rio="otsu")
    with pytest.raises(ValueError, match="kind: expected one of"):   # the data set is a keyword, not the second argument
        probe_checkpoint(ck, "synthetic", splits=sp)
    with pytest.raises(ValueError, match="missing"):
        probe_model(fused, {"train": sp["train"]})


def test_probe_checkpoint_bad_files(tmp_path):
    from topocl.evaluate import probe_checkpoint
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        probe_checkpoint(tmp_path / "missing.pt", dataset="synthetic")
    bad = tmp_path / "bad.pt"; bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        probe_checkpoint(bad, dataset="synthetic")
    with pytest.raises(ValueError, match=r"unknown linear probe setting\(s\) \['epoch'\]"):   # before the file is read
        probe_checkpoint(tmp_path / "missing.pt", probe=dict(epoch=3), dataset="synthetic")


def test_load_splits_missing_file(tmp_path, isolated_env):
    from topocl.evaluate import load_splits
    with pytest.raises(FileNotFoundError, match="breastmnist"):
        load_splits("breastmnist", root=tmp_path)
    with pytest.raises(ValueError, match="limit"):
        load_splits("synthetic", limit=0)


def test_load_splits_medmnist_real(medmnist_root, isolated_env):
    from topocl.evaluate import load_splits
    MEDMNIST = medmnist_root
    sp = load_splits("breastmnist", root=MEDMNIST, limit=50)
    x, y = sp["test"]
    assert x.shape == (50, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64 and set(np.unique(y)) <= {0, 1}
    assert len(load_splits("breastmnist", root=MEDMNIST)["train"][0]) == 546


def test_probe_checkpoint_on_real_breastmnist(tmp_path, medmnist_root, isolated_env):
    "The whole path on real data: an untrained tiny fused model, Otsu ROIs, PH, features, probe (plumbing only)."
    MEDMNIST = medmnist_root
    import torch
    from topocl.evaluate import probe_checkpoint
    from topocl.features import FeatureOptions
    from topocl.model import save_checkpoint, TopoCLModel
    torch.manual_seed(0)
    ck = save_checkpoint(TopoCLModel(kind="fused", **TINY), tmp_path / "f.pt")
    opt = FeatureOptions(device="cpu", cache_dir=tmp_path / "cache")
    r = probe_checkpoint(ck, probe=dict(epochs=5), options=opt, dataset="breastmnist", root=MEDMNIST, limit=60)
    assert r["n_test"] == 60 and r["n_classes"] == 2 and 0 <= r["test_auc"] <= 1
    assert r["n_roi_fallback"] >= 0 and r["roi"] == "otsu"
    again = probe_checkpoint(ck, probe=dict(epochs=5), options=opt, dataset="breastmnist", root=MEDMNIST, limit=60)
    assert again["test_acc"] == r["test_acc"]                   # cached masks/diagrams give the same answer


def test_run_settings_read_from_training_files(tmp_path, fused, isolated_env):
    "A checkpoint in a stage folder: its config.yaml gives dataset, ROI and persistence; an old run's, its calibration's."
    import yaml
    from topocl.augment import CALIBRATION_FORMAT, CALIBRATION_VERSION
    from topocl.evaluate import run_settings, probe_checkpoint, load_splits
    from topocl.features import FeatureOptions
    from topocl.model import save_checkpoint
    run = tmp_path / "run"
    ck = save_checkpoint(fused, run / "stage3" / "topocl.pt")
    assert run_settings(ck) == {}                                   # no training files: nothing recorded
    cfg = dict(data=dict(name="synthetic", root=None, size=28, options=dict(n=64, n_classes=2)),
               roi=dict(extractor="full", options={}), augment=dict(calibration=None), out_dir="elsewhere/run")
    (run / "stage3" / "config.yaml").write_text(yaml.safe_dump(cfg))
    st = run_settings(ck)
    assert st == dict(dataset="synthetic", size=28, data_options=dict(n_classes=2), roi="full", roi_options={})
    cal = dict(format=CALIBRATION_FORMAT, version=CALIBRATION_VERSION, entries={},
               meta=dict(bands=dict(weak=[0.05, 0.15]), n_images=8, seed=0, roi="full", filtration="superlevel",
                         backend="gudhi"))
    (run / "calibration.json").write_text(json.dumps(cal))         # found at <out_dir>, i.e. beside stage3/
    st = run_settings(ck)                                            # an old run: no persistence section, so the calibration's
    assert (st["persistence"]["filtration"], st["persistence"]["backend"], st["persistence"]["normaliser"]) == ("superlevel", "gudhi", "diagram")
    r = probe_checkpoint(ck, probe=dict(epochs=2), options=FeatureOptions(device="cpu"), limit=8)
    p = r["persistence"]
    assert (r["dataset"], r["roi"], p["filtration"], p["backend"], r["n_classes"]) == ("synthetic", "full", "superlevel", "gudhi", 2)
    new = dict(cfg, persistence=dict(filtration="sublevel", backend="cripser", k0=48, k1=96, scales=[1.0, 0.5], normaliser="roi"))
    (run / "stage3" / "config.yaml").write_text(yaml.safe_dump(new))   # a new run: its own section, not the calibration
    assert run_settings(ck)["persistence"] == new["persistence"]
    (run / "stage3" / "config.yaml").write_text(yaml.safe_dump(dict(new, persistence=dict(filtration="upward"))))
    with pytest.raises(ValueError, match="persistence.filtration must be one of sublevel, superlevel"):
        run_settings(ck)
    (run / "stage3" / "config.yaml").write_text("data: [unclosed")
    with pytest.raises(ValueError, match="config.yaml"):
        run_settings(ck)
    with pytest.raises(ValueError, match="name the dataset"):
        probe_checkpoint(save_checkpoint(fused, tmp_path / "alone.pt"), options=FeatureOptions(device="cpu"))


@pytest.mark.slow
def test_probe_checkpoints_of_a_tiny_training_run(tmp_path, isolated_env):
    "Train the three stages for seconds (topocl.train.tiny_config), then probe baseline and TopoCL from the files alone."
    from topocl.train import tiny_config, train_all
    from topocl.evaluate import probe_checkpoint
    from topocl.features import FeatureOptions
    from topocl.statistics import compare_variants
    res = train_all(tiny_config(str(tmp_path / "run")))
    vis, fus = res[1].weights, res[3].weights
    recs = []
    for seed in (0, 1):
        for variant, ck in (("baseline", vis), ("topocl", fus)):
            r = probe_checkpoint(ck, probe=LinearProbeConfig(epochs=10, seed=seed), options=FeatureOptions(device="cpu"), limit=40)
            assert r["dataset"] == "synthetic" and r["n_test"] == 40 and r["kind"] == ("visual" if variant == "baseline" else "fused")
            recs.append(dict(dataset="synthetic", method="simclr", variant=variant, seed=seed, acc=r["test_acc"], auc=r["test_auc"]))
    cmp = compare_variants(recs)
    assert (cmp.n_pairs == 2).all()
