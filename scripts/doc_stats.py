"""What a reader of the docs sees: per notebook, the code cells that show a result, and what should not be there.

The notebooks are the docs site, which shows their stored outputs and executes nothing. This counts, per notebook,
the code cells a reader sees (not exported definitions, not hidden cells), how many of them show an output, and
the cells per page; and it lists outputs or sources that name a folder of our machines (a temporary folder, the
shared data folder beside the checkout). `--check` fails (exit status 1) when the share of cells with an output
is below `--min-share`, a notebook has more than `--max-cells` cells, or a machine path appears.

    python scripts/doc_stats.py            # the table
    python scripts/doc_stats.py --check    # as CI runs it
"""
import argparse, json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HIDDEN = ('export', 'exporti', 'exports', 'hide', 'default_exp')   # not shown on the site
# folders that exist only on the machine that ran a notebook
MACHINE_PATHS = re.compile(r"(/tmp/[\w.-]+/|\.\./shared/|/work/|/root/|/home/\w+/|pytest-of-)")


def directives(src: str) -> set:
    "The nbdev directives of a cell (`#| export` -> 'export')."
    return {line[3:].split()[0] for line in src.splitlines() if line.startswith('#| ') and len(line) > 3}


def output_text(cell) -> str:
    parts = []
    for o in cell.get('outputs', []):
        parts.append(''.join(o.get('text', '')))
        parts += [''.join(v) if isinstance(v, list) else str(v) for k, v in o.get('data', {}).items() if k.startswith('text/')]
    return '\n'.join(parts)


def notebook_stats(path: Path) -> dict:
    nb = json.loads(path.read_text())
    code = [c for c in nb['cells'] if c['cell_type'] == 'code']
    shown = [c for c in code if not (directives(''.join(c['source'])) & set(HIDDEN))]
    paths = [f"{path.name} cell {c.get('id')}: {m.group(0)}" for c in nb['cells']
             for m in [MACHINE_PATHS.search(''.join(c['source']) if c['cell_type'] == 'markdown' else output_text(c))] if m]
    return dict(notebook=path.name, cells=len(nb['cells']), code=len(code), shown=len(shown),
                with_output=sum(bool(c.get('outputs')) for c in shown), machine_paths=paths)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--nbs', default=str(ROOT / 'nbs'))
    ap.add_argument('--check', action='store_true')
    ap.add_argument('--min-share', type=float, default=0.5, help='of the shown code cells with an output (default 0.5)')
    ap.add_argument('--max-cells', type=int, default=60, help='cells per notebook (default 60)')
    a = ap.parse_args(argv)
    rows = [notebook_stats(p) for p in sorted(Path(a.nbs).glob('*.ipynb'))]
    print(f"{'notebook':28} {'cells':>5} {'shown':>5} {'output':>6}  share")
    for r in rows:
        print(f"{r['notebook']:28} {r['cells']:5} {r['shown']:5} {r['with_output']:6}  {r['with_output'] / max(r['shown'], 1):.0%}")
    shown, out = sum(r['shown'] for r in rows), sum(r['with_output'] for r in rows)
    share = out / max(shown, 1)
    print(f"\n{out} of {shown} shown code cells have an output ({share:.0%}); "
          f"{sum(r['code'] for r in rows)} code cells in all, {len(rows)} notebooks")
    problems = [p for r in rows for p in r['machine_paths']]
    problems += [f"{r['notebook']}: {r['cells']} cells (at most {a.max_cells})" for r in rows if r['cells'] > a.max_cells]
    if share < a.min_share: problems.append(f"{share:.0%} of the shown code cells have an output (at least {a.min_share:.0%})")
    for p in problems: print('PROBLEM', p)
    return 1 if a.check and problems else 0


if __name__ == '__main__':
    sys.exit(main())
