"""Training throughput: SimCLR baseline (stage 1, visual views) vs TopoCL stage 3 (topology-aware views whose
diagrams are computed on the fly in DataLoader workers, both encoders, MoE fusion), measured in the same run.

    python bench/training.py            # 28 px ResNet-18 (small-input stem) and 224 px ResNet-50, on CPU
    python bench/training.py --quick    # fewer steps

Each setting runs the real `topocl.train.Trainer` for two epochs of a few steps and reports the second epoch
(the first one includes worker start-up and allocator warm-up); baseline and TopoCL alternate `--repeats` times
and the best epoch of each is kept, which filters out other jobs on a shared machine. Besides the end-to-end
images/s it prints what a step is made of: the per-image cost of the views (in one process) and the model step
alone on a pre-collated batch, so that data and compute overheads can be told apart. The paper's ratio is
574 / 668 = 0.86 (H100, batch 256, 224 px); the target here is >= 0.9.
"""
import argparse, os, sys, tempfile, time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import default_collate

from topocl import train as T
from topocl.augment import CalibrationSettings, calibrate
from topocl.data import make_synthetic
from topocl.model import ModelConfig
from topocl.roi import compute_rois


def setting(name, size, arch, small, rgb, batch, steps, workers, out):
    "A Config for one benchmark setting (paper-sized topology encoder and MoE, SimCLR)."
    return T.Config(
        data=T.DataConfig(name='synthetic', size=size, options=dict(n=batch * steps, rgb=rgb)),
        model=ModelConfig(arch=arch, in_chans=3 if rgb else 1, small_input=small),
        method=T.MethodConfig('simclr'),
        train=T.OptimConfig(epochs=2, batch_size=batch, warmup_epochs=0),
        out_dir=str(out / name), num_workers=workers, device='cpu', progress=False,
        visual_ckpt='scratch', topology_ckpt='scratch')   # random encoders: the cost is the same as pretrained ones


def make_calibration(cfg, out, n_images):
    "A small calibration with every default operation and combination (its quality does not matter for speed)."
    imgs = make_synthetic(max(n_images, 2), cfg.data.size, rgb=cfg.data.options['rgb'], seed=1).images
    masks = compute_rois(imgs, 'otsu', progress=False).masks
    masks = np.stack([masks[i] for i in range(len(imgs))])
    t0 = time.perf_counter()
    cal = calibrate(imgs, masks, CalibrationSettings(n_images=n_images, keep_samples=False, exact=False, t_grid=(0, .2, .4, .6, .8, 1.0)))
    print(f"  calibration on {n_images} images: {time.perf_counter() - t0:.1f} s "
          f"(GUDHI's approximate bottleneck; {sum(len(cal.admissible(l)) for l in cal.bands)} admissible combinations)")
    return str(cal.save(Path(out) / f'cal{cfg.data.size}.json'))


def per_image_ms(ds, n):
    t0 = time.perf_counter()
    for i in range(n): ds[(0, i)]
    return 1e3 * (time.perf_counter() - t0) / n


def model_step_imgs(stage, cfg, repeats=3):
    "Images/s of forward + backward + AdamW on one pre-collated batch (no data loading)."
    parts = T.build_stage(stage, replace(cfg, model=replace(cfg.model, kind=T.STAGE_KINDS[stage])))
    batch = default_collate([parts.dataset[(0, i)] for i in range(cfg.train.batch_size)])
    dev = torch.device('cuda' if cfg.device.startswith('cuda') else 'cpu')
    method, dtype = parts.method.to(dev), T.autocast_dtype(cfg.train, dev)
    if cfg.train.channels_last: method = method.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(method.parameters(), lr=1e-4)
    best = float('inf')
    for _ in range(repeats + 1):   # the first one warms up
        t0 = time.perf_counter()
        v1, v2 = parts.split(batch, dev)
        if cfg.train.channels_last: v1, v2 = T.to_channels_last(v1), T.to_channels_last(v2)
        with torch.autocast('cuda', dtype=dtype or torch.float16, enabled=dtype is not None): loss = method(v1, v2)
        opt.zero_grad(); loss.backward(); opt.step()
        if dev.type == 'cuda': torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return cfg.train.batch_size / best, parts.dataset


def end_to_end(stage, cfg):
    "The second epoch of a real two-epoch run: (images/s, fraction of time waiting for data)."
    res = T.train_stage(stage, cfg)
    m = res.metrics[-1]
    return m['img_per_s'], m['data_wait']


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--quick', action='store_true', help='fewer steps per epoch and one repeat')
    ap.add_argument('--workers', type=int, default=max(1, min(8, (os.cpu_count() or 2) - 1)),
                    help='DataLoader workers (default: cores - 1, at least 1, at most 8)')
    ap.add_argument('--threads', type=int, default=os.cpu_count(), help='torch threads of the training process')
    ap.add_argument('--only', choices=['28', '224'], help='run one setting only')
    ap.add_argument('--device', default='cpu', help="'cpu' (default) or 'cuda'")
    ap.add_argument('--batch', type=int, default=None, help='batch size of both settings (default: 32 at 28 px, 8 at 224 px; the paper: 256)')
    ap.add_argument('--set', action='append', default=[], metavar='FIELD=VALUE',
                    help='config overrides, e.g. --set train.amp_dtype=bfloat16 --set train.channels_last=true')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory(prefix='topocl-bench-') as tmp:   # checkpoints of ResNet-50 runs: GBs
        os.environ.setdefault('TOPOCL_CACHE', str(Path(tmp) / 'cache'))
        run(a, Path(tmp))


def run(a, out):
    steps, repeats = (2, 1) if a.quick else (4, 2)
    settings = [('28px-resnet18', 28, 'resnet18', True, False, 32), ('224px-resnet50', 224, 'resnet50', False, True, 8)]
    if a.only: settings = [s for s in settings if s[1] == int(a.only)]
    gpu = f", {torch.cuda.get_device_name()}" if a.device.startswith('cuda') else ''
    print(f"torch {torch.__version__}{gpu}, {', '.join(a.set) or 'default precision'}, {os.cpu_count()} CPU cores, {a.threads} torch threads, {a.workers} DataLoader "
          f"workers, SimCLR, {steps} steps/epoch, best of {repeats}")
    rows = []
    for name, size, arch, small, rgb, batch in settings:
        print(f"\n== {name}, batch {batch}")
        batch = a.batch or batch
        cfg = setting(name, size, arch, small, rgb, batch, steps, a.workers, out)
        cfg = T.apply_overrides(T.apply_overrides(cfg, {'device': a.device}), a.set)
        cfg = T.apply_overrides(cfg, {'augment.calibration': make_calibration(cfg, out, 4 if size > 64 else 16)})
        base_model, vis_ds = model_step_imgs(1, cfg)
        topo_model, topo_ds = model_step_imgs(3, cfg)
        n = 16 if size > 64 else 64
        ms_vis, ms_topo = per_image_ms(vis_ds, n), per_image_ms(topo_ds, n)
        print(f"  views per image (one process): visual {ms_vis:.1f} ms, topology-aware + 2 diagrams {ms_topo:.1f} ms")
        print(f"  model step alone: baseline {base_model:.1f} img/s, TopoCL {topo_model:.1f} img/s "
              f"(compute ratio {topo_model / base_model:.2f})")
        best = {1: (0, 0), 3: (0, 0)}
        for r in range(repeats):
            for stage in (1, 3):
                ips, wait = end_to_end(stage, T.apply_overrides(cfg, {'out_dir': str(out / f'{name}-{stage}-{r}')}))
                print(f"  run {r + 1}: {'baseline' if stage == 1 else 'TopoCL  '} {ips:7.1f} img/s, "
                      f"{100 * wait:4.1f}% waiting for data")
                if ips > best[stage][0]: best[stage] = (ips, wait)
        ratio = best[3][0] / best[1][0]
        rows.append((name, batch, best[1][0], best[3][0], ratio, topo_model / base_model, ms_vis, ms_topo))
        print(f"  ratio TopoCL / baseline: {ratio:.2f}")
    print("\nsetting          batch  baseline img/s  TopoCL img/s  ratio  (model only)  views ms/img vis/topo")
    for name, batch, b, t, r, mr, mv, mt in rows:
        print(f"{name:16s} {batch:5d}  {b:14.1f}  {t:12.1f}  {r:5.2f}  ({mr:5.2f})       {mv:6.1f} / {mt:6.1f}")
    print("paper (H100, batch 256): SimCLR 668, +TopoCL 574 img/s, ratio 0.86; target >= 0.9")


if __name__ == '__main__':
    main()
