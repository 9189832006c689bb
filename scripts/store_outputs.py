"""Execute the lesson notebooks and store in them the outputs a reader should see.

GitHub and the docs site render a notebook's stored outputs and execute nothing, so the figures and tables of
the lessons are only seen if they are committed. This keeps what shows something (figures, tables, short
printed results) and drops the rest: stderr (warnings, progress bars), outputs of exported and hidden cells,
and long text. Cells skipped by the test flags (`#| slow`, `#| cuda`) keep whatever they had.

    python scripts/store_outputs.py [NOTEBOOK ...]   # default: every nbs/*.ipynb
    nbdev_clean                                     # then normalise the metadata, as for any notebook
"""
import argparse, base64, json, os, sys
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_IMAGE_KB = 150      # a PNG above this is a figure to shrink, not one to commit
MAX_TEXT_LINES = 30     # longer printed output is cut, with a note saying so
SKIP_FLAGS = {'slow', 'cuda'}
# readable at docs width, small on disk; after pyplot's import, which applies the inline backend's own rc
FIGURE_SETUP = "import matplotlib.pyplot as plt; plt.rcParams['figure.dpi'] = 72"


def _skipped(cell) -> bool:
    "What nbdev_test does not run: markdown, `#| eval: false`, cells of the skipped flags."
    if cell.cell_type != 'code': return True
    direc = getattr(cell, 'directives_', {}) or {}
    if direc.get('eval:', [''])[0].lower() == 'false': return True
    return bool(SKIP_FLAGS & set(direc))


def _shown(cell) -> bool:
    "Exported and hidden cells show nothing in the docs, so they keep no output."
    direc = getattr(cell, 'directives_', {}) or {}
    return not ({'export', 'exporti', 'exports', 'hide'} & set(direc))


def _cut(text: str) -> str:
    lines = text.splitlines(True)
    if len(lines) <= MAX_TEXT_LINES: return text
    return ''.join(lines[:MAX_TEXT_LINES]) + f'... ({len(lines) - MAX_TEXT_LINES} more lines not stored)\n'


def keep_outputs(outputs: list, where: str) -> list:
    "The outputs of one cell worth storing, as plain nbformat dicts."
    kept = []
    for o in outputs:
        o = dict(o)
        if o['output_type'] == 'stream':
            if o.get('name') != 'stdout': continue
            text = o['text'] if isinstance(o['text'], str) else ''.join(o['text'])
            kept.append(dict(output_type='stream', name='stdout', text=_cut(text)))
        elif o['output_type'] in ('display_data', 'execute_result'):
            data = {k: v for k, v in dict(o['data']).items() if k in ('image/png', 'text/html', 'text/markdown', 'text/plain')}
            if 'image/png' in data:
                kb = len(base64.b64decode(data['image/png'])) / 1024
                if kb > MAX_IMAGE_KB: raise ValueError(f'{where}: a {kb:.0f} KB figure; make it smaller (figsize, dpi)')
                data.pop('text/html', None)
            if 'image/png' in data or 'text/html' in data: data.pop('text/plain', None)   # the repr adds nothing
            if 'text/plain' in data and len(data) == 1:
                text = data['text/plain'] if isinstance(data['text/plain'], str) else ''.join(data['text/plain'])
                data['text/plain'] = _cut(text)
            kept.append(dict(output_type='display_data', data=data, metadata={}))
    return kept


def store(path: Path) -> str:
    "Execute `path` as nbdev_test does and write the outputs to keep back into it."
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory
    from nbdev.frontmatter import FrontmatterProc
    from nbdev.process import NBProcessor
    os.environ['IN_TEST'] = '1'       # as under nbdev_test: a notebook's own nbdev_export calls do nothing
    nb = NBProcessor(path, procs=FrontmatterProc, process=True).nb
    shell = CaptureShell(path, mpl_format='png')
    with working_directory(path.parent):
        shell.run_cell(FIGURE_SETUP)
        shell.run_all(nb, exc_stop=True, preproc=_skipped)
    raw = json.loads(path.read_text())
    assert len(raw['cells']) == len(nb.cells), f'{path}: cell count changed while processing'
    n_fig = 0
    for i, (cell, run) in enumerate(zip(raw['cells'], nb.cells)):
        if cell['cell_type'] != 'code' or _skipped(run): continue
        cell['outputs'] = keep_outputs(run.get('outputs', []), f'{path.name} cell {i}') if _shown(run) else []
        cell['execution_count'] = None
        n_fig += sum('image/png' in o.get('data', {}) for o in cell['outputs'])
    tmp = path.with_suffix('.ipynb.tmp')
    tmp.write_text(json.dumps(raw, indent=1, ensure_ascii=False) + '\n')
    tmp.replace(path)                 # a failed run leaves the notebook as it was
    return f'{path.name}: {n_fig} figure(s), {path.stat().st_size / 1024:.0f} KB'


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('notebooks', nargs='*', type=Path)
    ap.add_argument('--jobs', type=int, default=2)
    ap.add_argument('--one', action='store_true', help=argparse.SUPPRESS)
    args = ap.parse_args()
    nbs = [p.resolve() for p in args.notebooks] or sorted((ROOT / 'nbs').glob('*.ipynb'))
    if args.one: return print(store(nbs[0]))
    # one process per notebook: IPython takes over `__main__` in the process it runs in
    run = lambda p: subprocess.run([sys.executable, __file__, '--one', str(p)], capture_output=True, text=True)
    failed = 0
    with ThreadPoolExecutor(args.jobs) as ex:
        for p, r in zip(nbs, ex.map(run, nbs)):
            print(r.stdout.strip() if r.returncode == 0 else f'{p.name}: FAILED\n{r.stderr[-3000:]}', flush=True)
            failed += r.returncode != 0
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
