#!/usr/bin/env python3
"""Reports import circles between the modules of one crate.

    python3 scripts/module-cycles.py crates/akidb-rest/src

Reads every `use crate::...`, `use super::...` and inline `crate::a::b` path of the crate's
source files (tests modules included: a `#[cfg(test)]` import is still a dependency), maps
each to the deepest module that exists, and prints every strongly connected group of two or
more modules. A module's use of its own submodules, or of its parent, is not an edge of
interest for layering and is ignored. Exits 1 when a circle exists.
"""

import os
import re
import sys


def modules(root):
    """Maps module path (tuple) -> file, for lib.rs/main.rs and every mod.rs/<name>.rs below."""
    found = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            parts = rel[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            found[tuple(parts)] = os.path.join(dirpath, name)
    return found


def expand(tree):
    """Expands a use tree `a::{b, c::{d, e}}` into paths [a::b, a::c::d, a::c::e]."""
    tree = re.sub(r"\s+", "", tree)
    out = []

    def walk(prefix, text):
        depth = 0
        parts, start = [], 0
        for i, ch in enumerate(text):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                parts.append(text[start:i])
                start = i + 1
        parts.append(text[start:])
        for part in filter(None, parts):
            brace = part.find("{")
            if brace >= 0 and part.endswith("}"):
                walk(prefix + part[:brace], part[brace + 1 : -1])
            else:
                out.append(prefix + part.split(" as ")[0])

    walk("", tree)
    return out


def resolve(current, path, known):
    """The deepest known module that `path` (as written in module `current`) names."""
    segs = [s for s in path.split("::") if s]
    if not segs:
        return None
    if segs[0] == "crate":
        base, segs = [], segs[1:]
    elif segs[0] == "super":
        base = list(current)
        while segs and segs[0] == "super":
            base, segs = base[:-1], segs[1:]
    elif segs[0] == "self":
        base, segs = list(current), segs[1:]
    else:
        return None
    best = tuple(base)
    for seg in segs:
        candidate = best + (seg,)
        if candidate in known:
            best = candidate
        else:
            break
    return best


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "src"
    known = modules(root)
    edges = {m: set() for m in known}
    use_re = re.compile(r"\buse\s+((?:crate|super|self)::[^;]+);", re.S)
    path_re = re.compile(r"\b((?:crate|super)(?:::[A-Za-z_][A-Za-z0-9_]*)+)")
    for mod, file in known.items():
        text = open(file, encoding="utf-8").read()
        text = re.sub(r"//[^\n]*", "", text)
        paths = [p for tree in use_re.findall(text) for p in expand(tree)]
        paths += path_re.findall(use_re.sub("", text))
        for path in paths:
            target = resolve(mod, path, known)
            if target is None or target == mod:
                continue
            # A parent using its child, or a child its ancestor, is containment, not layering.
            if target[: len(mod)] == mod or mod[: len(target)] == target:
                continue
            edges[mod].add(target)

    # Tarjan's strongly connected components.
    index, low, stack, on, groups, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    name = lambda m: "::".join(m) or "crate"
    for group in groups:
        members = sorted(group)
        print("circle: " + ", ".join(name(m) for m in members))
        for m in members:
            for t in sorted(edges[m] & set(group)):
                print(f"  {name(m)} -> {name(t)}")
    print(f"{len(known)} modules, {sum(map(len, edges.values()))} edges, {len(groups)} circles")
    sys.exit(1 if groups else 0)


if __name__ == "__main__":
    main()
