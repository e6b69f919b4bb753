#!/usr/bin/env python3
"""The module graph of vcsync's crates, and the circles in it.

A module (one file) depends on another when its code, outside `#[cfg(test)]` items, names a path
into it: `use crate::a::b::{C, d}`, `crate::a::f()`, `super::x::Y`, `self::child::Z`, or a child
module by its bare name. A name that a facade re-exports (`pub use`) counts as a dependency on
the module that defines it, not on the facade: `lib.rs` may gather the crate's API without
standing in a circle. Module declarations (`mod x;`) are not dependencies.

Usage: tests/module_graph.py [--graph] [crate source folders...]
Exits 1, listing each circle, when a folder's graph has one. Default folders: src, syncer/src.
"""

import os
import re
import sys

ROOTS = ("lib.rs", "main.rs")
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
RAW = re.compile(r'b?r(#*)"')
CHAR = re.compile(r"'(?:\\(?:x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|.)|[^\\'])'")


def module_of(src, path):
    """The module path (tuple) of file `path` under crate folder `src`."""
    rel = os.path.relpath(path, src)[: -len(".rs")].split(os.sep)
    if rel[-1] == "mod" or (len(rel) == 1 and rel[0] + ".rs" in ROOTS):
        rel = rel[:-1]
    return tuple(rel)


def blank_literals(code):
    """`code` with comments gone and string and char literals emptied, in one pass (a `//`
    inside a string is no comment, a quote inside a comment or a char literal opens nothing)."""
    out, i, n = [], 0, len(code)
    while i < n:
        c = code[i]
        if code.startswith("//", i):
            i = code.find("\n", i)
            i = n if i < 0 else i
        elif code.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if code.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif code.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            out.append(" ")
        elif c in "br" and (raw := RAW.match(code, i)) and (i == 0 or not (code[i - 1].isalnum() or code[i - 1] == "_")):
            close = '"' + raw.group(1)
            end = code.find(close, raw.end())
            i = n if end < 0 else end + len(close)
            out.append('""')
        elif c == '"':
            i += 1
            while i < n and code[i] != '"':
                i += 2 if code[i] == "\\" else 1
            i += 1
            out.append('""')
        elif c == "'" and (char := CHAR.match(code, i)):
            i = char.end()
            out.append("' '")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def strip(code):
    """`code` without comments, literals, and `#[cfg(test)]` items."""
    code = blank_literals(code)
    out, i = [], 0
    for match in re.finditer(r"#\[cfg\(test\)\]", code):
        if match.start() < i:
            continue
        out.append(code[i : match.start()])
        j = match.end()
        # The item ends at its matching close brace, or at a `;` before any brace.
        depth, k = 0, j
        while k < len(code):
            c = code[k]
            if c == ";" and depth == 0:
                break
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    break
            k += 1
        i = k + 1
    out.append(code[i:])
    return "".join(out)


def use_paths(tree, prefix=()):
    """The paths of a use tree (`a::{b, c::{d, e as f}}`), each with its binding name."""
    tree = tree.strip()
    if not tree:
        return []
    brace = tree.find("{")
    if brace < 0:
        path = tree.split(" as ")[0].strip()
        parts = tuple(p for p in path.split("::") if p)
        alias = tree.split(" as ")[1].strip() if " as " in tree else (parts[-1] if parts else "")
        return [(prefix + parts, alias)]
    head = tuple(p for p in tree[:brace].split("::") if p)
    body = tree[brace + 1 : tree.rfind("}")]
    items, depth, start = [], 0, 0
    for i, c in enumerate(body):
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif c == "," and depth == 0:
            items.append(body[start:i])
            start = i + 1
    items.append(body[start:])
    paths = []
    for item in items:
        paths.extend(use_paths(item, prefix + head))
    return paths


class Crate:
    def __init__(self, src):
        self.src = src
        self.files = {}
        for folder, _, names in os.walk(src):
            for name in names:
                if name.endswith(".rs"):
                    path = os.path.join(folder, name)
                    self.files[module_of(src, path)] = path
        self.code = {m: strip(open(p, encoding="utf-8").read()) for m, p in self.files.items()}
        # Re-exports: module -> {name: absolute path it names}.
        self.exports = {}
        for module, code in self.code.items():
            table = {}
            for tree in re.findall(r"\bpub(?:\([^)]*\))?\s+use\s+([^;]+);", code):
                for path, alias in use_paths(tree):
                    resolved = self.absolute(module, path)
                    if resolved is not None and alias not in ("self", "*"):
                        table[alias] = resolved
            self.exports[module] = table

    def absolute(self, module, path):
        """`path` as written in `module`, from the crate root; None if outside the crate."""
        if not path:
            return None
        if path[0] == "crate":
            return path[1:]
        if path[0] in ("self", "super"):
            base = list(module)
            rest = list(path)
            while rest and rest[0] in ("self", "super"):
                if rest.pop(0) == "super":
                    if not base:
                        return None
                    base.pop()
            return tuple(base) + tuple(rest)
        if module + (path[0],) in self.files:
            return module + tuple(path)
        return None

    def target(self, path, seen=()):
        """The module that defines what absolute `path` names (following re-exports)."""
        module = ()
        for i, segment in enumerate(path):
            if module + (segment,) in self.files:
                module = module + (segment,)
                continue
            export = self.exports.get(module, {}).get(segment)
            if export is not None and export not in seen:
                return self.target(export + tuple(path[i + 1 :]), seen + (export,))
            break
        return module

    def edges(self):
        graph = {m: set() for m in self.files}
        for module, code in self.code.items():
            paths = []
            for tree in re.findall(r"\buse\s+([^;]+);", code):
                if re.search(r"\bpub(?:\([^)]*\))?\s+use\s+" + re.escape(tree), code):
                    continue  # a facade's re-export
                paths.extend(path for path, _ in use_paths(tree))
            for match in re.finditer(rf"\b((?:crate|super|self)(?:::{IDENT})+)", code):
                paths.append(tuple(match.group(1).split("::")))
            for match in re.finditer(rf"(?<![:\w])({IDENT})::{IDENT}", code):
                if module + (match.group(1),) in self.files:
                    paths.append((match.group(1),) + ("_",))
            for path in paths:
                absolute = self.absolute(module, path)
                if absolute is None:
                    continue
                target = self.target(absolute)
                if target != module:
                    graph[module].add(target)
        return graph


def circles(graph):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def name(module):
    return "::".join(module) or "crate"


def main(args):
    show = "--graph" in args
    folders = [a for a in args if a != "--graph"] or ["src", "syncer/src"]
    failed = False
    for src in folders:
        graph = Crate(src).edges()
        if show:
            for module in sorted(graph):
                print(f"{src}: {name(module)} -> {', '.join(name(t) for t in sorted(graph[module]))}")
        for component in circles(graph):
            failed = True
            print(f"{src}: circle of {len(component)} modules: {', '.join(name(m) for m in component)}")
            members = set(component)
            for module in component:
                inside = sorted(t for t in graph[module] if t in members)
                print(f"    {name(module)} -> {', '.join(name(t) for t in inside)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
