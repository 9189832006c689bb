"""Render the notebooks to static HTML with the outputs stored in them, so a docs page can be looked at
in a browser on a machine without quarto (the docs site's renderer, which this project's machines cannot
install). Nothing is executed: a page shows exactly the figures committed in its notebook.

    python scripts/docs_preview.py                    # nbs/ (and nbs/experiments/) -> _preview/
    python scripts/docs_preview.py a.ipynb --out /tmp/p

nbdev directives are applied the way the docs site applies them, so a page shows what the site would:
cells marked `hide`, `export`, `exporti` or `default_exp` are left out (on the site an exported cell is
replaced by its `show_doc` signature, which needs the code executed, so the preview has neither), as
are cells with `include: false`; `echo: false` hides a cell's code and `output: false` its outputs; the
`#|` lines themselves are not shown. It is a preview, not the site: no sidebar, no API docs, no search."""
import argparse, html, re, shutil, sys, warnings
from pathlib import Path
import nbformat
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parents[1]
DIRECTIVE = re.compile(r'^\s*#\|\s*([\w-]+):?\s*(.*?)\s*$')
DROP = {'hide', 'export', 'exporti', 'default_exp'}  # as nbdev's rm_export does for the site
IMAGE_REF = re.compile(r'!\[[^\]]*\]\(<?([^)\s>]+)|<img[^>]*\ssrc="([^"]+)"')


def directives(src: str) -> tuple[dict, str]:
    "The leading `#|` directives of a code cell (name -> value) and the source without them."
    lines, found = src.splitlines(), {}
    while lines and (m := DIRECTIVE.match(lines[0])):
        found[m[1]] = m[2].lower()
        lines.pop(0)
    return found, '\n'.join(lines)


def apply_directives(nb):
    "Drop, hide and strip what the docs site would; returns `nb`, changed in place."
    cells = []
    for cell in nb.cells:
        if cell.cell_type == 'code':
            d, cell.source = directives(cell.source)
            if DROP & d.keys() or d.get('include') == 'false': continue
            # nbdev marks show_doc cells echo: false, so the site shows their output only
            if d.get('echo') == 'false' or cell.source.lstrip().startswith('show_doc('):
                cell.metadata['transient'] = {'remove_source': True}  # what nbconvert's TagRemovePreprocessor sets
            if d.get('output') == 'false': cell.outputs = []
            if not cell.source.strip() and not cell.outputs: continue
        elif not cell.source.strip(): continue
        cells.append(cell)
    nb.cells = cells
    return nb


def title(nb, default: str) -> str:
    "The notebook's `# Title` (nbdev takes the page title from it), else `default`."
    for cell in nb.cells:
        if cell.cell_type == 'markdown' and (m := re.search(r'^#\s+(.+)$', cell.source, re.M)):
            return m[1].replace('`', '').strip()
    return default


def copy_images(nb, src_dir: Path, dest_dir: Path):
    "Copy the local images a markdown cell links to (`images/x.png`) beside the page, as quarto copies them."
    for cell in nb.cells:
        if cell.cell_type != 'markdown': continue
        for ref in (a or b for a, b in IMAGE_REF.findall(cell.source)):
            f = src_dir/ref
            if ':' in ref or ref.startswith('/') or not f.is_file(): continue  # URLs, data: and missing files
            (dest_dir/ref).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest_dir/ref)


def find_notebooks(paths) -> list[tuple[Path, Path]]:
    "(notebook, page path under the output folder) in the docs site's order: each folder's index first."
    found = []
    for p in map(Path, paths):
        if p.is_dir():
            for nb in p.rglob('*.ipynb'):  # folders and files starting with _ or . are skipped, as nbdev does
                rel = nb.relative_to(p)
                if not any(part[0] in '_.' for part in rel.parts): found.append((nb, rel.with_suffix('.html')))
        else: found.append((p, Path(p.stem + '.html')))
    # index.html is this preview's own list of pages, so a top-level index notebook becomes home.html
    found = [(nb, Path('home.html') if rel == Path('index.html') else rel) for nb, rel in found]
    key = lambda o: (o[1].parent.parts, o[0].stem != 'index', o[1].name)
    return sorted(found, key=key)


def render(paths, out: Path) -> list[tuple[Path, str]]:
    "Write one HTML page per notebook and `index.html` listing them; returns (page, title) in order."
    exporter = HTMLExporter(template_name='lab', exclude_input_prompt=True, exclude_output_prompt=True)
    out.mkdir(parents=True, exist_ok=True)
    pages = []
    for nb_path, rel in find_notebooks(paths):
        with warnings.catch_warnings():  # the notebooks have no cell ids on purpose (nbdev_clean, clean_ids)
            warnings.filterwarnings('ignore', message='Cell is missing an id field')
            nb = apply_directives(nbformat.read(nb_path, as_version=4))
        name = title(nb, nb_path.stem)
        body, _ = exporter.from_notebook_node(nb, resources={'metadata': {'name': name}})  # images inline, base64
        (out/rel).parent.mkdir(parents=True, exist_ok=True)
        (out/rel).write_text(body, encoding='utf-8')
        copy_images(nb, nb_path.parent, (out/rel).parent)
        pages.append((rel, name))
    items = '\n'.join(f'<li><a href="{rel.as_posix()}">{html.escape(name)}</a> <small>{rel.as_posix()}</small></li>'
                      for rel, name in pages)
    (out/'index.html').write_text(f'<!doctype html>\n<meta charset="utf-8">\n<title>Docs preview</title>\n'
                                  f'<h1>Docs preview</h1>\n<p>Stored outputs, nothing executed.</p>\n<ol>\n{items}\n</ol>\n',
                                  encoding='utf-8')
    return pages


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('paths', nargs='*', default=[ROOT/'nbs'], help='notebooks or folders of notebooks (default: nbs/)')
    ap.add_argument('--out', type=Path, default=ROOT/'_preview', help='output folder (default: _preview/)')
    args = ap.parse_args(argv)
    pages = render(args.paths, args.out)
    print(f'{len(pages)} pages: {args.out/"index.html"}')


if __name__ == '__main__':
    sys.exit(main())
