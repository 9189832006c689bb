"""How the library reads: lines per module, the longest functions, the public functions with the most parameters,
long lines and statements joined with ';'. Run on any checkout (`--root`) to compare before and after a change:

    python scripts/code_stats.py                 # this checkout's topocl/
    python scripts/code_stats.py --root OTHER    # another checkout, e.g. a `git worktree` of an older commit
"""
import argparse, ast, io, tokenize
from pathlib import Path

def functions(tree):
    "Every function and method: (qualified name, first line, number of lines, parameter count, public)."
    out = []
    def walk(node, prefix=''):
        for n in ast.iter_child_nodes(node):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = n.args
                params = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs if p.arg not in ('self', 'cls')]
                params += [x.arg for x in (a.vararg, a.kwarg) if x]
                public = not n.name.startswith('_') and not prefix.startswith('_')
                out.append((prefix + n.name, n.lineno, n.end_lineno - n.lineno + 1, len(params), public))
                walk(n, prefix + n.name + '.')
            elif isinstance(n, ast.ClassDef): walk(n, prefix + n.name + '.')
    walk(tree)
    return out

def joined_statements(src:str)->int:
    "Lines holding a ';' that separates statements (not one inside a string or comment)."
    lines = set()
    for t in tokenize.generate_tokens(io.StringIO(src).readline):
        if t.type == tokenize.OP and t.string == ';': lines.add(t.start[0])
    return len(lines)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--root', default=Path(__file__).resolve().parents[1], type=Path, help='a checkout (default: this one)')
    p.add_argument('--top', type=int, default=10)
    args = p.parse_args(argv)
    mods = sorted(f for f in (args.root/'topocl').glob('*.py') if f.name != '_modidx.py')
    rows, fns, total, long_lines, joined = [], [], 0, 0, 0
    for f in mods:
        src = f.read_text(); lines = src.splitlines()
        code = [l for l in lines if l.strip() and not l.lstrip().startswith('#')]
        total += len(code); long_lines += sum(len(l) > 100 for l in code); joined += joined_statements(src)
        rows.append((f.name, len(code)))
        fns += [(f.stem + '.' + n, *rest) for n, *rest in functions(ast.parse(src))]
    print(f'{len(mods)} modules, {total} lines of code (no blank or comment lines)')
    print(f'lines over 100 characters: {long_lines} ({100 * long_lines / max(total, 1):.1f}%); '
          f'lines joining statements with ";": {joined}')
    print('\nlines per module:')
    for name, n in sorted(rows, key=lambda r: -r[1]): print(f'  {n:6d}  {name}')
    print(f'\nthe {args.top} longest functions (lines):')
    for name, _, n, k, _ in sorted(fns, key=lambda r: -r[2])[:args.top]: print(f'  {n:6d}  {name} ({k} parameters)')
    wide = sorted((r for r in fns if r[4] and r[3] > 8), key=lambda r: -r[3])
    print(f'\npublic functions over 8 parameters: {len(wide)}')
    for name, _, n, k, _ in wide[:args.top]: print(f'  {k:6d}  {name}')

if __name__ == '__main__': main()
