"""Draw the TopoCL pipeline figure for the docs' index page (nbs/images/pipeline.png).

Every data panel is computed with TopoCL itself on one synthetic image (`topocl.data.make_synthetic`,
fixed seed): its Otsu ROI (`topocl.roi.get_extractor('otsu')`), the cubical persistence diagram on that
ROI (`topocl.persistence.PersistenceConfig().diagram`), the diagram tokens (`PersistenceConfig().tokens`,
k0=48 H0 + k1=96 H1 rows of (birth, death, is_H0, is_H1)), and two topology-aware views
(`topocl.augment.apply_ops`) with their relative bottleneck distance r (`topocl.augment.view_r`).
The model boxes are drawn, not run.

    python scripts/pipeline_figure.py [--out nbs/images/pipeline.png] [--dpi 100]
"""
from __future__ import annotations
import argparse, time
from pathlib import Path

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch
import numpy as np

from topocl.data import make_synthetic, SYNTHETIC_CLASSES
from topocl.roi import get_extractor
from topocl.persistence import PersistenceConfig
from topocl.augment import apply_ops, view_r

SIZE, SEED, CLASS = 64, 0, 3          # a 64 px synthetic image of class 3 ('two rings or ring and blob')
VIEWS = [(('flip', 'noise'), {'noise': 0.015}, 1),   # (ops, intensities, rng seed) of the two views
         (('rot90', 'blur'), {'blur': 0.4}, 2)]
W, H = 11.0, 4.3                      # figure size in inches; the overlay axes use inch coordinates

C_TOPO, C_VIS, C_FUSE, C_OUT = '#d9e8f5', '#fde5cc', '#e3f1dc', '#eeeeee'   # box fills
E_TOPO, E_VIS, E_FUSE, E_OUT = '#3a78b5', '#d9822b', '#4c9a3f', '#666666'   # box edges / stage badges
H0_COL, H1_COL = '#1f77b4', '#d62728'
ROOT = Path(__file__).resolve().parents[1]
FS = 8.5                                # base font size


def pick_image():
    "The first image of class CLASS in a small synthetic set, with its Otsu ROI."
    s = make_synthetic(16, size=SIZE, seed=SEED)
    i = int(np.flatnonzero(s.labels == CLASS)[0])
    img = s.images[i]
    return img, get_extractor('otsu')(img), SYNTHETIC_CLASSES[CLASS]


def compute(img, roi):
    "Diagram, tokens and the two views (with r) of one image."
    cfg = PersistenceConfig()
    dg = cfg.diagram(img, roi)
    tok, pad = cfg.tokens(dg)
    views = []
    for ops, inten, seed in VIEWS:
        x, _ = apply_ops(img, roi, ops, inten, np.random.default_rng(seed))
        r = view_r(img, roi, ops, inten, np.random.default_rng(seed), base=dg, persistence=cfg)
        views.append((x, ' + '.join(ops), r))
    return cfg, dg, tok.numpy(), pad.numpy(), views


def panel(fig, x, y, w, h):
    "An axes at (x, y, w, h) in inches."
    return fig.add_axes([x / W, y / H, w / W, h / H])


def box(ax, x, y, w, h, title, lines=(), fc=C_OUT, ec=E_OUT, badge=None, fs=None):
    "A rounded box with a bold title over smaller lines, the block centred; returns its (x0, y0, x1, y1)."
    fs = fs or FS
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle='round,pad=0,rounding_size=0.08',
                                fc=fc, ec=ec, lw=1.3, zorder=2))
    lt, lb, gap = 1.15 * (fs + 0.5) / 72, 1.3 * (fs - 0.5) / 72, 0.1   # line heights (inches) and title gap
    nt, nb = title.count('\n') + 1, len(lines)
    top = y + h / 2 + (nt * lt + (gap + nb * lb if nb else 0)) / 2
    ax.text(x + w / 2, top, title, ha='center', va='top', fontsize=fs + 0.5, weight='bold', zorder=3,
            linespacing=1.15)
    if nb:
        ax.text(x + w / 2, top - nt * lt - gap, '\n'.join(lines), ha='center', va='top',
                fontsize=fs - 0.5, zorder=3, linespacing=1.3, color='#222222')
    if badge is not None: stage_badge(ax, x + w - 0.02, y + h - 0.02, badge[0], badge[1])
    return x, y, x + w, y + h


def stage_badge(ax, x, y, n, color):
    ax.text(x, y, str(n), ha='center', va='center', fontsize=FS - 0.5, weight='bold', color='white', zorder=5,
            bbox=dict(boxstyle='circle,pad=0.18', fc=color, ec='white', lw=0.8))


def arrow(ax, p, q, text=None, off=(0, 0.09), color='#333333', rad=0.0, **kw):
    "An arrow from p to q (inches), optionally labelled at its middle."
    ax.annotate('', xy=q, xytext=p, zorder=4,
                arrowprops=dict(arrowstyle='-|>', color=color, lw=1.2, mutation_scale=11,
                                shrinkA=0, shrinkB=0, connectionstyle=f'arc3,rad={rad}', **kw))
    if text:
        ax.text((p[0] + q[0]) / 2 + off[0], (p[1] + q[1]) / 2 + off[1], text, ha='center', va='bottom',
                fontsize=FS - 0.5, style='italic', color='#333333', zorder=4)


def image_panel(fig, x, y, s, im, title, cmap='gray', sub=None):
    a = panel(fig, x, y, s, s)
    a.imshow(im, cmap=cmap, vmin=0, vmax=1 if im.dtype != np.uint8 else 255, interpolation='nearest')
    a.set_xticks([]); a.set_yticks([])
    for sp in a.spines.values(): sp.set_color('#888888'); sp.set_linewidth(0.8)
    a.set_title(title, fontsize=FS, pad=3)
    if sub: a.set_xlabel(sub, fontsize=FS - 1, labelpad=2)
    return a


def draw(out:Path, dpi:int=100):
    img, roi, cls_name = pick_image()
    cfg, dg, tok, pad, views = compute(img, roi)

    fig = plt.figure(figsize=(W, H))
    ov = fig.add_axes([0, 0, 1, 1], zorder=-1)     # boxes and text, in inches, below the data panels
    ov.set_xlim(0, W); ov.set_ylim(0, H); ov.axis('off')
    top = fig.add_axes([0, 0, 1, 1], zorder=10)    # arrows, above the data panels
    top.set_xlim(0, W); top.set_ylim(0, H); top.axis('off'); top.patch.set_alpha(0)
    ar = lambda *a, **k: arrow(top, *a, **k)

    TY, BY, S = 2.75, 0.72, 1.05   # bottom edges of the topology (top) and visual (bottom) rows; panel side

    # input image, between the two rows
    in_x, in_y, in_s = 0.15, 1.62, 1.15
    image_panel(fig, in_x, in_y, in_s, img, 'input image', sub=f'synthetic, {SIZE} px')
    ov.text(in_x + in_s / 2, in_y - 0.36, f'class {CLASS}:\n{cls_name}', ha='center', va='top', fontsize=FS - 1.5,
            color='#555555', linespacing=1.2)

    # topology row: ROI -> persistence diagram -> tokens
    roi_x = 1.95
    image_panel(fig, roi_x, TY, S, roi.astype(float), 'ROI (Otsu)')

    pd_x, pd_w = 3.55, 1.1
    a = panel(fig, pd_x, TY, pd_w, S)
    pts = np.concatenate([dg.h0, dg.h1])
    lo = max(0.0, np.floor(pts.min() * 10 - 0.5) / 10)
    a.plot([lo, 1], [lo, 1], color='#999999', lw=0.8, ls=':')
    a.scatter(*dg.h0.T, s=10, c=H0_COL, label='H0', zorder=3, lw=0)
    a.scatter(*dg.h1.T, s=12, c=H1_COL, marker='^', label='H1', zorder=3, lw=0)
    pad_ = 0.04 * (1 - lo)
    a.set_xlim(lo - pad_, 1 + pad_); a.set_ylim(lo - pad_, 1 + pad_)
    a.set_xticks([lo, 1]); a.set_yticks([lo, 1]); a.tick_params(labelsize=FS - 2, length=2, pad=1)
    a.set_xlabel('birth', fontsize=FS - 1.5, labelpad=-7); a.set_ylabel('death', fontsize=FS - 1.5, labelpad=-9)
    a.legend(fontsize=FS - 2, loc='lower right', handletextpad=0.05, borderpad=0.25, labelspacing=0.15,
             framealpha=0.9, markerscale=1.3, borderaxespad=0.2)
    a.set_title('persistence diagram', fontsize=FS, pad=3)

    tk_x, tk_w = 5.28, 0.6
    a = panel(fig, tk_x, TY, tk_w, S)
    shown = np.ma.masked_array(tok, np.repeat(pad[:, None], 4, 1))
    cm = plt.get_cmap('viridis').copy(); cm.set_bad('#dddddd')
    a.imshow(shown, aspect='auto', cmap=cm, vmin=0, vmax=1, interpolation='nearest')
    a.axhline(cfg.k0 - 0.5, color='white', lw=1.5)
    a.set_xticks(range(4)); a.set_xticklabels(['b', 'd', 'H0', 'H1'], fontsize=FS - 2.5)
    a.tick_params(length=0, pad=1)
    a.set_yticks([cfg.k0 / 2 - 0.5, cfg.k0 + cfg.k1 / 2 - 0.5])
    a.set_yticklabels([f'H0\n{cfg.k0}', f'H1\n{cfg.k1}'], fontsize=FS - 2, linespacing=0.95)
    a.set_title('tokens', fontsize=FS, pad=3)
    a.set_xlabel(f'{cfg.k0 + cfg.k1} x 4', fontsize=FS - 1.5, labelpad=1)

    # visual row: two topology-aware views
    v_x = [1.95, 3.35]
    for k, (x, ops, r) in enumerate(views):
        image_panel(fig, v_x[k], BY, S, x, f'view {k + 1}', sub=f'{ops}, r = {r:.2f}')
    ov.text((v_x[0] + v_x[1] + S) / 2, BY + S + 0.3, 'topology-aware augmentation', ha='center', va='bottom',
            fontsize=FS - 0.5, style='italic', color='#333333')

    # model boxes
    bx, bw = 6.25, 1.85
    tb = box(ov, bx, TY - 0.22, bw, S + 0.5, 'Hierarchical\nTopology Encoder',
             ['PH encoder (point-wise MLP)', 'self-attention within H0 / H1', 'cross-attention H0 \u2194 H1',
              'max + mean pool \u2192 t'], C_TOPO, E_TOPO, (2, E_TOPO))
    vb = box(ov, bx, BY - 0.12, bw, S + 0.24, 'Backbone (ResNet)', ['each view \u2192 pooled features v'],
             C_VIS, E_VIS, (1, E_VIS))
    mx, mw, my, mh = 8.45, 1.4, 1.2, 2.15
    box(ov, mx, my, mw, mh, 'Mixture-of-\nExperts fusion',
        ['5 experts: visual,', 'topology, concat,', 'gated, cross-attention', '',
         '5-way softmax gate', 'weighted sum \u2192 z'], C_FUSE, E_FUSE, (3, E_FUSE))
    ox, ow, oh = 10.13, 0.8, 1.6
    oy = my + mh / 2 - oh / 2
    ov.add_patch(FancyBboxPatch((ox, oy), ow, oh, boxstyle='round,pad=0,rounding_size=0.08',
                                fc=C_OUT, ec=E_OUT, lw=1.3, zorder=2))
    for frac, t in ((0.73, 'contrastive\nloss\n(stage 3)'), (0.25, 'linear\nprobe\n(eval)')):
        ov.text(ox + ow / 2, oy + oh * frac, t, ha='center', va='center', fontsize=FS - 1, weight='bold',
                linespacing=1.15)
    ov.plot([ox + 0.1, ox + ow - 0.1], [oy + oh / 2, oy + oh / 2], color='#999999', lw=0.8)

    # arrows: topology path
    gap = 0.07
    ymid_t, ymid_b = TY + S / 2, BY + S / 2
    ar((in_x + in_s + gap, in_y + in_s * 0.85), (roi_x - gap, ymid_t), rad=-0.2)
    ar((roi_x + S + gap, ymid_t), (pd_x - 0.26, ymid_t))
    ar((pd_x + pd_w + gap, ymid_t), (tk_x - 0.27, ymid_t))
    ar((tk_x + tk_w + gap, ymid_t), (bx - gap, ymid_t))
    # visual path
    ar((in_x + in_s + gap, in_y + in_s * 0.15), (v_x[0] - gap, ymid_b), rad=0.2)
    ar((v_x[1] + S + gap, ymid_b), (bx - gap, ymid_b))
    # into fusion and out
    ar((tb[2] + gap, ymid_t), (mx - gap, my + mh * 0.75), 't', off=(0.07, 0.0))
    ar((vb[2] + gap, ymid_b), (mx - gap, my + mh * 0.25), 'v', off=(0.07, -0.15))
    ar((mx + mw + gap, my + mh / 2), (ox - gap, my + mh / 2), 'z', off=(0, 0.03))

    # the three training stages, one line at the bottom
    ys, x, rend = 0.17, 1.95, fig.canvas.get_renderer()
    for n, c, t in [(1, E_VIS, 'stage 1: visual SSL (backbone alone)'),
                    (2, E_TOPO, 'stage 2: topology pretraining (encoder alone)'),
                    (3, E_FUSE, 'stage 3: joint fine-tuning of both encoders + MoE')]:
        stage_badge(ov, x, ys, n, c)
        tx = ov.text(x + 0.15, ys, t, ha='left', va='center', fontsize=FS - 0.5, color='#333333')
        x += 0.15 + tx.get_window_extent(rend).width / fig.dpi + 0.4

    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, metadata={'Software': None})
    plt.close(fig)
    return dict(diagram=dg, r=[v[2] for v in views])


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', type=Path, default=ROOT / 'nbs/images/pipeline.png', help='output PNG (default: nbs/images/pipeline.png of this repository)')
    p.add_argument('--dpi', type=int, default=100)
    a = p.parse_args()
    t = time.time()
    info = draw(a.out, a.dpi)
    print(f"wrote {a.out} ({a.out.stat().st_size / 1024:.0f} KB) in {time.time() - t:.1f} s: {info['diagram']}, "
          f"view r = {', '.join(f'{r:.3f}' for r in info['r'])}")


if __name__ == '__main__':
    main()
