"""Render nbs/index.ipynb to README.md without quarto (which `nbdev_readme` needs and this
project's machines cannot install): markdown cells as they are, visible code cells as Python
blocks with their text outputs. `--check` exits 1 when README.md is out of date."""
import re, sys
from pathlib import Path
import nbformat

ROOT = Path(__file__).resolve().parents[1]
HEADER = "<!-- generated from nbs/index.ipynb by scripts/make_readme.py: edit the notebook, not this file -->\n\n"

def _hidden(src: str) -> bool:
    first = src.lstrip().splitlines()[:3]
    return any(l.replace(' ', '') in ('#|hide', '#|exporti', '#|export') for l in first)

def _code(cell) -> str:
    lines = [l for l in cell.source.splitlines() if not l.startswith('#|')]
    out = ["```python", *lines, "```"]
    for o in cell.get('outputs', []):
        text = o.get('text') or o.get('data', {}).get('text/plain')
        if text: out += ["", "```", (''.join(text) if isinstance(text, list) else text).rstrip(), "```"]
    return '\n'.join(out)

def _markdown(src: str) -> str:
    "Links and images relative to nbs/ (notebooks, nbs/images) as seen from the repository root."
    return re.sub(r'\]\((?!https?:|/|#)([^)\s]+\.(?:ipynb|png))\)', r'](nbs/\1)', src)

def render(nb_path=ROOT/'nbs'/'index.ipynb') -> str:
    nb = nbformat.read(nb_path, as_version=4)
    parts = [_markdown(c.source) if c.cell_type == 'markdown' else _code(c)
             for c in nb.cells if c.source.strip() and not (c.cell_type == 'code' and _hidden(c.source))]
    return HEADER + '\n\n'.join(parts) + '\n'

if __name__ == '__main__':
    text, readme = render(), ROOT/'README.md'
    if '--check' in sys.argv:
        if not readme.exists() or readme.read_text() != text:
            sys.exit("README.md is out of date: run `python scripts/make_readme.py`")
    else:
        readme.write_text(text)
