"""Stage-3 settings on the demo, side by side: the table and figure of nbs/45_pipeline.ipynb's stage-3 study.

For each seed: stages 1 and 2 of the demo config (reused if already trained), then `topocl.pipeline.stage3_ablation`
over the settings below (each stage 3 from the same stage-1/2 weights), every layer probed. One JSON record per
(seed, setting) is appended to --out as soon as it is done, so an interrupted run keeps what it finished.

    python scripts/stage3_ablation.py --seeds 0 1 2 --settings paper importance cross-modal ... [--no-diagrams]
"""
from __future__ import annotations
import argparse, json
from dataclasses import replace
from pathlib import Path

import torch

from topocl.train import demo_config, train_stage, STAGE3_RECIPES, apply_overrides
from topocl.pipeline import stage3_ablation, seed_config

# one option at a time on top of the paper's stage 3, and the recipes
SETTINGS = {
    **{name: recipe for name, recipe in STAGE3_RECIPES.items()},
    'gate-temperature-2': {**STAGE3_RECIPES['paper'], 'model.gate_temperature': 2.0},
    'importance': {**STAGE3_RECIPES['paper'], 'stage3.importance': 1.0},
    'switch': {**STAGE3_RECIPES['paper'], 'stage3.switch': 1.0},
    'hinge': {**STAGE3_RECIPES['paper'], 'stage3.hinge': 0.015},
    'z-loss': {**STAGE3_RECIPES['paper'], 'stage3.z_loss': 1e-3},
    'unimodal': {**STAGE3_RECIPES['paper'], 'stage3.unimodal': 1.0},
    'cross-modal': {**STAGE3_RECIPES['paper'], 'stage3.cross_modal': 1.0},
    'modality-dropout': {**STAGE3_RECIPES['paper'], 'model.modality_dropout': 0.3},
    'cross-modal+importance': {**STAGE3_RECIPES['paper'], 'stage3.cross_modal': 1.0, 'stage3.importance': 1.0},
    'lr-per-part': {**STAGE3_RECIPES['paper'], 'stage3.lr_visual': 1e-5, 'stage3.lr_topology': 2e-4, 'stage3.lr_fusion': 5e-4},
}

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out-dir', default='runs/stage3-ablation', help='where the runs are trained')
    p.add_argument('--out', default='nbs/results/stage3_demo.jsonl', help='JSON lines of results (appended)')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--settings', nargs='+', default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument('--no-diagrams', action='store_true', help="each setting's no-diagrams control instead")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = replace(demo_config(a.out_dir), progress=False, tensorboard=False)
    cfg = apply_overrides(cfg, {'monitor.every': 1, 'monitor.max_train': 256, 'monitor.max_val': 256})
    out = Path(a.out); out.parent.mkdir(parents=True, exist_ok=True)
    for seed in a.seeds:
        for s in (1, 2): train_stage(s, seed_config(cfg, seed, a.out_dir), resume=True)
        for name in a.settings:
            df = stage3_ablation(cfg, {name: SETTINGS[name]}, seed, empty_diagrams=a.no_diagrams,
                                 start=name == a.settings[0] and not a.no_diagrams)
            with out.open('a') as f:
                for r in df.to_dict('records'): f.write(json.dumps(r, default=float) + '\n')
            print(f'seed {seed}, {name}: fused {100 * df.fused_acc.iloc[-1]:.2f}', flush=True)

if __name__ == '__main__':
    main()
