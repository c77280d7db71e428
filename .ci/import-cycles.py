#!/usr/bin/env python3
"""Import cycles between the files of a Rust crate:
`python3 .ci/import-cycles.py [--known DIR]... SRC...`.

Each SRC is a crate's src/ directory (cli/src, engine/src). A file's module is its path
(main.rs/lib.rs the root, a/mod.rs and a.rs `a`, a/b.rs `a::b`); an edge A -> B is a
path in A that names module B or something in it: `crate::b::...`, `super::...`, a
child module's name, or a name the root re-exports or a macro the crate exports (edges
to where it is defined). `mod` declarations are not edges; `#[cfg(test)]` sections are
skipped (they use their own module). Prints every cycle (strongly connected component
of more than one file) and exits 1 if there is one; prints the edge count otherwise.
A cycle wholly inside a `--known` directory is printed as known and does not fail
(cli/src/oci: its mod.rs holds Global and the log functions its commands use; the
split waits for the branch that reworks that log). A textual approximation, exact enough for nook's style (no glob re-exports, no
`#[path]`): it errs towards reporting an edge, never hides one it can see.
"""

import os
import re
import sys

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def module_of(src, path):
    rel = os.path.relpath(path, src)[: -len(".rs")]
    parts = rel.split(os.sep)
    if parts[-1] in ("mod", "main", "lib"):
        parts = parts[:-1]
    return tuple(parts)


def strip(text):
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    cut = text.find("#[cfg(test)]")
    return text if cut < 0 else text[:cut]


def expand(prefix, body):
    """`crate::{a::b, c::{d, e}}` -> crate::a::b, crate::c::d, crate::c::e."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(body + ","):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            item = body[start:i].strip()
            start = i + 1
            if not item:
                continue
            m = re.match(r"^(.*?)::\{(.*)\}$", item, re.S)
            if m:
                out += expand(prefix + "::" + m.group(1).strip(), m.group(2))
            else:
                out.append(prefix + "::" + item.split(" as ")[0].strip())
    return out


def paths_in(text):
    found = []
    for m in re.finditer(r"\b((?:crate|super|self)(?:::(?:super|%s))*)::\{([^;]*?)\}\s*;" % IDENT, text, re.S):
        found += expand(m.group(1), m.group(2))
    found += re.findall(r"\b(?:\$?crate|super|self)(?:::%s)+" % IDENT, text)
    return found


def main(args):
    known, srcs = [], []
    while args:
        a = args.pop(0)
        if a == "--known":
            known.append(os.path.normpath(args.pop(0)))
        else:
            srcs.append(a)
    srcs = srcs or ["cli/src", "engine/src"]
    cycles = 0
    for src in srcs:
        files = {}
        for dirpath, _, names in os.walk(src):
            for n in names:
                if n.endswith(".rs"):
                    p = os.path.join(dirpath, n)
                    files[module_of(src, p)] = p
        texts = {m: strip(open(p, encoding="utf-8").read()) for m, p in files.items()}
        root = ()
        # Names the root defines by re-export or exported macro, and where they live.
        defined = {}
        for m, t in texts.items():
            for name in re.findall(r"macro_rules!\s*(%s)" % IDENT, t):
                defined[name] = m
        for line in re.findall(r"pub use ([^;]*);", texts.get(root, "")):
            for p in expand("crate", line) if "{" in line else ["crate::" + line]:
                parts = [x.strip() for x in p.split("::")[1:]]
                target = resolve(files, tuple(parts[:-1])) or root
                defined.setdefault(parts[-1].split(" as ")[-1], target)
        edges = {m: set() for m in files}
        for m, t in texts.items():
            children = {c[-1] for c in files if len(c) == len(m) + 1 and c[: len(m)] == m}
            refs = paths_in(t)
            refs += [
                "self::" + p
                for p in re.findall(r"(?<![:\w])((?:%s)(?:::%s)+)" % ("|".join(map(re.escape, children)) or "$^", IDENT), t)
            ]
            for ref in refs:
                parts = ref.lstrip("$").split("::")
                head, rest = parts[0], parts[1:]
                if head == "crate":
                    base = ()
                elif head == "self":
                    base = m
                else:
                    base = m[:-1]
                while rest and rest[0] == "super":
                    base, rest = base[:-1], rest[1:]
                target = resolve(files, base + tuple(rest))
                if target == base and head == "crate" and rest and rest[0] in defined:
                    target = defined[rest[0]]
                if target is not None and target != m:
                    edges[m].add(target)
        for comp in sccs(edges):
            if len(comp) > 1:
                names = sorted(os.path.relpath(files[c]) for c in comp)
                if known and all(
                    any(n.startswith(k + os.sep) for k in known) for n in names
                ):
                    print(f"known cycle in {src} (not failing): " + " <-> ".join(names))
                    continue
                cycles += 1
                print(f"cycle in {src}: " + " <-> ".join(names))
                for a in sorted(comp):
                    for b in sorted(edges[a] & comp):
                        print(f"    {os.path.relpath(files[a])} -> {os.path.relpath(files[b])}")
        print(f"{src}: {len(files)} files, {sum(len(e) for e in edges.values())} import edges")
    if cycles:
        print(f"{cycles} import cycle(s)")
        return 1
    print("no import cycle")
    return 0


def resolve(files, path):
    """The longest prefix of `path` that is a module with a file."""
    for n in range(len(path), -1, -1):
        if path[:n] in files:
            return path[:n]
    return None


def sccs(edges):
    """Tarjan's strongly connected components."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

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
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            out.append(comp)

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            visit(v)
    return out


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
