#!/usr/bin/env python3
"""Fails if a public function or method of the crate has no runnable example in its docs.

Usage: .ci/doc_examples.py [RUSTDOC_JSON] (default target/doc/isoheap.json), after
    cargo +nightly rustdoc --lib --all-features -- -Z unstable-options --output-format json

Why not `--show-coverage`: its per-file `total` / `with_examples` count structs, fields, enum
variants and constants, and not the methods of inherent impls (src/api/mod.rs counted 3 items
for `Heap`'s twenty-odd methods), and it names no item. The rustdoc JSON has every item with
its docs, so this walks what a user can reach: public free functions, and the public methods
of the inherent impls of public structs, enums and unions (trait impl methods take the trait's
docs and are not counted). An example is a fenced code block that rustdoc compiles as Rust:
no language or `rust`, possibly with `should_panic`, `no_run` or `editionNNNN`; `ignore`,
`compile_fail`, `text` and other languages do not count.

Items named in .ci/doc_examples.allow (one `path::to::item` a line, `#` comments) are reported
but do not fail the check; an allowed item that has an example now is reported as stale.
"""

import json
import re
import sys
from pathlib import Path

RUNNABLE_ATTRS = {"", "rust", "should_panic", "no_run"}


def runnable(info: str) -> bool:
    tokens = [t.strip() for t in re.split(r"[,\s]+", info.strip()) if t.strip()]
    if not tokens:
        return True
    return all(t in RUNNABLE_ATTRS or re.fullmatch(r"edition\d{4}", t) for t in tokens)


def has_example(docs: str | None) -> bool:
    if not docs:
        return False
    fence = None
    for line in docs.splitlines():
        s = line.strip()
        m = re.match(r"^(```+|~~~+)(.*)$", s)
        if fence is None and m:
            fence = m.group(1)
            if runnable(m.group(2)):
                return True
        elif fence is not None and s.startswith(fence):
            fence = None
    return False


def main() -> int:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "target/doc/isoheap.json")
    doc = json.loads(path.read_text())
    index = doc["index"]
    root = str(doc["root"])
    allow_file = Path(__file__).with_name("doc_examples.allow")
    allowed = set()
    if allow_file.exists():
        for line in allow_file.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                allowed.add(line)

    checked: dict[str, tuple[str, bool]] = {}  # path -> (location, has example)
    seen = set()

    def loc(item) -> str:
        span = item.get("span")
        return f"{span['filename']}:{span['begin'][0]}" if span else "?"

    def visit(item_id, prefix: str):
        key = (str(item_id), prefix)
        if key in seen:
            return
        seen.add(key)
        item = index.get(str(item_id))
        if item is None or item.get("crate_id") != 0:
            return  # another crate's item (a re-export of a dependency)
        kind, inner = next(iter(item["inner"].items()))
        name = item.get("name")
        if kind == "module":
            if item.get("visibility") != "public" and str(item_id) != root:
                return
            sub = prefix if str(item_id) == root else f"{prefix}::{name}"
            for child in inner["items"]:
                visit(child, sub)
        elif kind == "use":
            if item.get("visibility") == "public" and inner.get("id") is not None:
                target = index.get(str(inner["id"]))
                if target is not None and target.get("crate_id") == 0:
                    if inner.get("is_glob"):
                        visit(inner["id"], prefix)
                    else:
                        visit_named(inner["id"], prefix, inner["name"])
        else:
            if item.get("visibility") == "public":
                visit_named(item_id, prefix, name)

    def visit_named(item_id, prefix: str, name: str):
        item = index.get(str(item_id))
        if item is None:
            return
        kind, inner = next(iter(item["inner"].items()))
        path = f"{prefix}::{name}"
        if kind == "module":
            for child in inner["items"]:
                visit(child, path)
        elif kind == "function":
            checked[path] = (loc(item), has_example(item.get("docs")))
        elif kind in ("struct", "enum", "union"):
            for impl_id in inner.get("impls", []):
                impl = index.get(str(impl_id))
                if impl is None:
                    continue
                imp = impl["inner"]["impl"]
                if imp.get("trait") is not None or imp.get("is_synthetic") or imp.get("blanket_impl"):
                    continue
                for m in imp["items"]:
                    mi = index.get(str(m))
                    if mi is None or "function" not in mi["inner"]:
                        continue
                    if mi.get("visibility") != "public":
                        continue
                    checked[f"{path}::{mi['name']}"] = (loc(mi), has_example(mi.get("docs")))

    visit(root, doc["index"][root]["name"])

    missing = sorted(p for p, (_, ok) in checked.items() if not ok and p not in allowed)
    excused = sorted(p for p, (_, ok) in checked.items() if not ok and p in allowed)
    stale = sorted(p for p in allowed if p not in checked or checked[p][1])
    with_ex = sum(ok for _, ok in checked.values())
    print(f"public functions and methods: {len(checked)}, with a runnable example: {with_ex}")
    for p in excused:
        print(f"  allowed without an example (.ci/doc_examples.allow): {p} ({checked[p][0]})")
    for p in stale:
        print(f"  stale entry in .ci/doc_examples.allow (has an example now, or gone): {p}")
    if missing:
        print(f"{len(missing)} public functions or methods have no runnable example:", file=sys.stderr)
        for p in missing:
            print(f"  {p}  ({checked[p][0]})", file=sys.stderr)
        return 1
    if not checked:
        print("no public function found: is the JSON the crate's?", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
