#!/usr/bin/env python3
"""The module graph of src/ and the size rules of issue 16.

A module is a file or directory one level below a top module: src/<top>/<file>.rs (or
src/<top>/<dir>/) is `top/file`, src/<top>/mod.rs is `top`, src/<file>.rs is `file`. Every
`crate::a::b` and `super::x` path in a file's non-test code (use lines and inline paths) is an
edge. A name a `mod.rs` re-exports from its child (`pub use child::Name`) is resolved to the child.

Prints the dependency list, the longest functions in src/gateway and src/admin and the files over
500 lines. Fails (exit 1) on an import cycle between modules, and on an import from a lower layer
to a higher one (`LAYERS`, top first: a top module may import only the layers below its own). The size rules (no function over 80
lines in src/gateway and src/admin, no file over 500 lines in src/) fail only with --strict; until
the code meets them they are reported, not enforced. CI (.ci/run) passes --strict.
"""

import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
FN_LIMIT = 80
FILE_LIMIT = 500

# The layers of src/, top first. A top module (src/<name>.rs or src/<name>/) may import only top
# modules of the layers below its own; a new top module must be placed here (the check fails on an
# unplaced one). `crate` is lib.rs (VERSION), importable from anywhere.
LAYERS = [
    ["main", "cli"],
    ["server"],
    ["http"],
    ["app_state"],
    ["admin"],
    ["cluster"],
    ["dev"],
    ["gateway"],
    ["alerts", "tools", "providers"],
    ["ledger"],
    ["store", "auth", "net_guard", "tokenizer", "telemetry"],
    ["metrics"],
    ["config"],
    ["money", "domain"],
]


def rust_files():
    for root, _, files in os.walk(SRC):
        for f in sorted(files):
            if f.endswith(".rs"):
                yield os.path.relpath(os.path.join(root, f), SRC)


def module_of(rel):
    """The graph node a file belongs to."""
    parts = rel[:-3].split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return "/".join(parts[:2]) if parts else "crate"


def resolve(parts):
    """The node a crate-relative path (list of segments) points into, and the rest."""
    if not parts:
        return "crate", []
    top = parts[0]
    if os.path.isdir(os.path.join(SRC, top)) and len(parts) > 1:
        sub = parts[1]
        if os.path.isfile(os.path.join(SRC, top, sub + ".rs")) or os.path.isdir(
            os.path.join(SRC, top, sub)
        ):
            return top + "/" + sub, parts[2:]
        return top, parts[1:]
    if os.path.isfile(os.path.join(SRC, top + ".rs")) or os.path.isdir(os.path.join(SRC, top)):
        return top, parts[1:]
    return None, []


def code_without_tests_and_comments(text):
    # Test modules may reach anywhere; they are cut at `#[cfg(test)]` followed by a `mod`.
    m = re.search(r"#\[cfg\(test\)\]\s*(pub\s+)?mod\s+\w+\s*\{", text)
    if m:
        text = text[: m.start()]
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    # A visibility (`pub(in crate::gateway)`) names a scope, not a dependency.
    text = re.sub(r"pub\(in [^)]*\)", "pub", text)
    return text


def expand_use(tree):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e]."""
    tree = tree.strip()
    depth = 0
    for i, ch in enumerate(tree):
        if ch == "{":
            if depth == 0:
                prefix = tree[:i]
                inner = tree[i + 1 : tree.rindex("}")]
                out, item, d = [], "", 0
                for c in inner:
                    if c == "," and d == 0:
                        out.append(item)
                        item = ""
                        continue
                    d += c == "{"
                    d -= c == "}"
                    item += c
                out.append(item)
                return [p for o in out if o.strip() for p in expand_use(prefix + o.strip())]
            depth += 1
    return [re.sub(r"\s+as\s+\w+$", "", tree)]


def paths_in(rel, code):
    """Crate-relative paths (segment lists) this file refers to."""
    here = rel[:-3].split(os.sep)
    parent = here[:-1] if here[-1] != "mod" else here[:-2]
    if here[-1] == "mod":
        self_mod = here[:-1]
    else:
        self_mod = here
    found = []
    trees = [expand_use(u) for u in re.findall(r"\buse\s+([^;]+);", code)]
    inline = re.findall(r"\b((?:crate|super)(?:::\w+)+)", code)
    for p in [p for t in trees for p in t] + inline:
        segs = [s for s in p.replace(" ", "").split("::") if s]
        if not segs:
            continue
        if segs[0] == "crate":
            found.append(segs[1:])
        elif segs[0] == "super":
            base = list(parent)
            segs = segs[1:]
            while segs and segs[0] == "super":
                base = base[:-1]
                segs = segs[1:]
            found.append(base + segs)
        elif segs[0] == "self":
            found.append(self_mod + segs[1:])
    return found


def reexports():
    """For each directory module, the names its mod.rs re-exports from a child."""
    out = {}
    for rel in rust_files():
        if not rel.endswith(os.sep + "mod.rs"):
            continue
        top = os.path.dirname(rel)
        if os.sep in top:
            continue
        code = code_without_tests_and_comments(open(os.path.join(SRC, rel)).read())
        for u in re.findall(r"\bpub\s+use\s+([^;]+);", code):
            for p in expand_use(u):
                segs = [s for s in p.split("::") if s]
                if segs and segs[0] == "self":
                    segs = segs[1:]
                if len(segs) >= 2 and (
                    os.path.isfile(os.path.join(SRC, top, segs[0] + ".rs"))
                    or os.path.isdir(os.path.join(SRC, top, segs[0]))
                ):
                    out.setdefault(top, {})[segs[-1]] = top + "/" + segs[0]
    return out


def graph():
    names = reexports()
    edges = {}
    for rel in rust_files():
        node = module_of(rel)
        if node in ("main", "lib", "crate"):
            continue
        code = code_without_tests_and_comments(open(os.path.join(SRC, rel)).read())
        deps = edges.setdefault(node, set())
        for segs in paths_in(rel, code):
            target, rest = resolve(segs)
            if target in names and rest and rest[0] in names[target]:
                target = names[target][rest[0]]
            # A parent's mod.rs declaring and re-exporting its children is not a dependency.
            if target and target != node and not (node == target.split("/")[0] and "/" in target and rel.endswith("mod.rs")):
                deps.add(target)
    return edges


def cycles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def long_functions(dirs):
    out = []
    for rel in rust_files():
        if not any(rel.startswith(d + os.sep) for d in dirs) or rel.endswith("tests.rs"):
            continue
        text = open(os.path.join(SRC, rel)).read()
        m = re.search(r"#\[cfg\(test\)\]\s*(pub\s+)?mod\s+\w+\s*\{", text)
        lines = (text[: m.start()] if m else text).split("\n")
        i = 0
        while i < len(lines):
            line = lines[i]
            m = re.match(r"\s*(pub(\([^)]*\))?\s+)?(async\s+)?(const\s+)?(unsafe\s+)?fn\s+(\w+)", line)
            if m and "cfg(test)" not in "".join(lines[max(0, i - 2) : i]):
                depth, started, j = 0, False, i
                while j < len(lines):
                    stripped = re.sub(r'"(\\.|[^"\\])*"', "", lines[j].split("//")[0])
                    for ch in stripped:
                        if ch == "{":
                            depth += 1
                            started = True
                        elif ch == "}":
                            depth -= 1
                    if started and depth <= 0:
                        break
                    if not started and stripped.rstrip().endswith(";"):
                        break
                    j += 1
                if started:
                    out.append((j - i + 1, f"src/{rel}:{i + 1}", m.group(6)))
                i = j + 1 if started and depth <= 0 and j > i else i + 1
                continue
            i += 1
    return sorted(out, reverse=True)


def big_files():
    out = []
    for rel in rust_files():
        n = sum(1 for _ in open(os.path.join(SRC, rel)))
        if n > FILE_LIMIT:
            out.append((n, "src/" + rel))
    return sorted(out, reverse=True)


def layer_violations(edges):
    """Edges from a top module to one in its own or a higher layer, and unplaced top modules."""
    layer = {m: i for i, names in enumerate(LAYERS) for m in names}
    out = []
    for node, targets in sorted(edges.items()):
        top = node.split("/")[0]
        if top == "crate":
            continue
        if top not in layer:
            out.append(f"{top}: not placed in LAYERS (.ci/module_deps.py)")
            continue
        for target in sorted(targets):
            other = target.split("/")[0]
            if other in (top, "crate"):
                continue
            if other not in layer:
                out.append(f"{other}: not placed in LAYERS (.ci/module_deps.py)")
            elif layer[other] <= layer[top]:
                out.append(f"{node} -> {target} (layer {layer[top]} imports layer {layer[other]})")
    return sorted(set(out))


def main():
    strict = "--strict" in sys.argv
    edges = graph()
    print("# module dependencies (module -> what it imports)")
    for node in sorted(edges):
        print(f"{node} -> {', '.join(sorted(edges[node])) or '-'}")
    funcs = long_functions(["gateway", "admin"])
    print(f"\n# longest functions in src/gateway and src/admin (limit {FN_LIMIT} lines)")
    for n, where, name in funcs[:10]:
        print(f"{n:5}  {name}  {where}")
    over_fn = [f for f in funcs if f[0] > FN_LIMIT]
    files = big_files()
    print(f"\n# files over {FILE_LIMIT} lines in src/")
    for n, where in files:
        print(f"{n:5}  {where}")
    found = cycles(edges)
    print("\n# import cycles between modules")
    for c in found:
        print("cycle: " + " <-> ".join(c))
    if not found:
        print("none")
    failed = bool(found)
    upward = layer_violations(edges)
    print("\n# imports from a lower layer to a higher one (or the same layer)")
    print("\n".join(upward) if upward else "none")
    failed = failed or bool(upward)
    if over_fn or files:
        print(
            f"\n# size rules: {len(over_fn)} function(s) over {FN_LIMIT} lines, "
            f"{len(files)} file(s) over {FILE_LIMIT} lines"
            + ("" if strict else " (reported, not enforced; --strict enforces)")
        )
        failed = failed or strict
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
