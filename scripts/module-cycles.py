#!/usr/bin/env python3
"""Module graph of one crate's src/ and its cycles: the check cargo-cycles
does not make (decision 0009). An edge a -> b is any path in a's code
(outside its unit tests) that names an item of module b: `crate::`,
`super::`, `self::`, grouped imports, and a parent naming a child. A child
naming its parent's items is an edge too, so what modules share belongs in
a leaf module. Text-based: inline `mod x { ... }` blocks count as their
file's module.

Usage: module-cycles.py SRC_DIR [--edges] [--owns]
Prints the modules, edges and cycles; exits 1 when there is a cycle.
"""
import os, re, sys
src = sys.argv[1]; owns = '--owns' in sys.argv; show = '--edges' in sys.argv
mods = {}
for root, _, files in os.walk(src):
    for f in files:
        if not f.endswith('.rs'): continue
        p = os.path.join(root, f); rel = os.path.relpath(p, src)[:-3].split(os.sep)
        if rel[-1] in ('lib', 'main'): rel = rel[:-1]
        elif rel[-1] == 'mod': rel = rel[:-1]
        if rel and rel[-1] == 'tests': continue
        mods[tuple(rel)] = p
def strip_tests(t):
    m = re.search(r'#\[cfg\(test\)\]\s*mod tests\s*\{', t)
    return t[:m.start()] if m else re.sub(r'#\[cfg\(test\)\]\s*mod tests;', '', t)
edges = set()
for m, p in mods.items():
    t = strip_tests(open(p).read())
    t = re.sub(r'//[^\n]*', '', t)
    # expand `use a::{b, c::{d}}` roughly: collect path-like tokens
    children = set(re.findall(r'^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;', t, re.M))
    refs = []
    for mt in re.finditer(r'\b(crate|super|self)((?:::\w+)+)', t):
        base, rest = mt.group(1), mt.group(2).strip(':').split('::')
        if base == 'crate': path = rest
        elif base == 'super': path = list(m[:-1]) + rest
        else: path = list(m) + rest
        refs.append(path)
    # grouped imports use crate::{a, b::c}
    for mt in re.finditer(r'\b(crate|super)::\{([^;]*)\}', t):
        base = [] if mt.group(1) == 'crate' else list(m[:-1])
        for item in re.findall(r'(\w+(?:::\w+)*)', mt.group(2)):
            refs.append(base + item.split('::'))
    # parent referring to its children by bare name
    for c in children:
        if re.search(r'(?<![:\w])' + c + r'::', t): refs.append(list(m) + [c, 'x'])
    for path in refs:
        best = None
        for i in range(len(path), -1, -1):
            if tuple(path[:i]) in mods: best = tuple(path[:i]); break
        if best is not None and best != m:
            edges.add((m, best))
if owns:
    for m in mods:
        if m: edges.add((m[:-1], m))
name = lambda m: '::'.join(m) or 'crate'
if show:
    for a, b in sorted(edges): print(f'{name(a)} -> {name(b)}')
# Tarjan SCC
import itertools
adj = {m: [] for m in mods}
for a, b in edges: adj[a].append(b)
idx = {}; low = {}; st = []; on = set(); sccs = []; c = itertools.count()
sys.setrecursionlimit(10000)
def sc(v):
    idx[v] = low[v] = next(c); st.append(v); on.add(v)
    for w in adj[v]:
        if w not in idx: sc(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        comp = []
        while True:
            w = st.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: sccs.append(comp)
for v in mods:
    if v not in idx: sc(v)
print(f'{len(mods)} modules, {len(edges)} edges, {len(sccs)} cycles')
for comp in sccs: print('cycle:', ', '.join(sorted(name(x) for x in comp)))
sys.exit(1 if sccs else 0)
