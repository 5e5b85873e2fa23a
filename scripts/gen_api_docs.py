#!/usr/bin/env python3
"""Writes docs/api.md, the Python API reference, from the installed raftkv package.

Docstrings come from the objects at run time (the extension's from its Rust source, the pure-Python
modules' from theirs); the extension's typed signatures come from its stub, raftkv/_raftkv.pyi,
which stubtest keeps true to the module. The command line's reference comes from its argparse
parser. The output depends only on the package, not on the Python version or the terminal.

    python scripts/gen_api_docs.py           # (re)write docs/api.md
    python scripts/gen_api_docs.py --check   # exit 1 if docs/api.md is not what it would write
"""

from __future__ import annotations

import argparse
import ast
import difflib
import inspect
import pathlib
import sys
import textwrap
import types
from typing import Any

import raftkv
import raftkv._raftkv as ext
import raftkv.aio
import raftkv.cli
from raftkv import faults, procs, pytest_plugin

OUT = pathlib.Path(__file__).resolve().parents[1] / "docs" / "api.md"

#: raftkv's public names, in the order the reference presents them; must be raftkv.__all__.
SECTIONS: list[tuple[str, list[str]]] = [
    ("Clusters and nodes", ["LocalCluster", "Node"]),
    ("Clients", ["Clerk"]),
    ("Histories and linearizability", [
        "History", "check_linearizable", "check_file", "CheckOutcome", "CheckResult",
    ]),
    ("Load", ["bench"]),
    ("Traces and replays", ["Trace", "visualize_trace"]),
    ("Deterministic simulation", ["SimCluster", "SimClerk"]),
    ("Sharding", [
        "ShardedCluster", "ShardGroup", "ShardClerk", "ShardController", "key_to_shard",
    ]),
    ("Exceptions", [
        "Error", "KeyNotFound", "VersionMismatch", "MaybeApplied", "Timeout", "TooLarge",
        "StoreFull", "ProtocolError", "ClusterError", "HistoryError", "MembershipError",
        "ShardError", "Unauthorized",
    ]),
]  # fmt: skip


def doc(obj: object) -> str:
    """The object's docstring, dedented; a marker when it has none (so it shows in review)."""
    d = inspect.getdoc(obj)
    return d.strip() if d else "*(no docstring)*"


# --- signatures from the extension's stub ------------------------------------------------------


class Stub:
    """The signatures of raftkv/_raftkv.pyi, by qualified name ("Clerk.get", "bench")."""

    def __init__(self, path: pathlib.Path) -> None:
        self.sigs: dict[str, str] = {}
        self.members: dict[str, list[str]] = {}
        self.bases: dict[str, list[str]] = {}
        self.attrs: dict[str, dict[str, tuple[str, str]]] = {}
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        tree = ast.parse(text)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                self.sigs[node.name] = self._sig(node, skip_first=False)
            elif isinstance(node, ast.ClassDef):
                self.bases[node.name] = [ast.unparse(b) for b in node.bases]
                self.members[node.name] = []
                self.attrs[node.name] = {}
                for item in node.body:
                    if isinstance(item, ast.FunctionDef):
                        qual = f"{node.name}.{item.name}"
                        is_prop = any(ast.unparse(d) == "property" for d in item.decorator_list)
                        if is_prop:
                            ret = ast.unparse(item.returns) if item.returns else "Any"
                            self.sigs[qual] = f": {ret}"
                        else:
                            static = any(
                                ast.unparse(d) == "staticmethod" for d in item.decorator_list
                            )
                            self.sigs[qual] = self._sig(item, skip_first=not static)
                        if item.name not in self.members[node.name]:
                            self.members[node.name].append(item.name)
                    elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                        comment = []
                        j = item.lineno - 2
                        while j >= 0 and lines[j].strip().startswith("#:"):
                            comment.insert(0, lines[j].strip()[2:].strip())
                            j -= 1
                        typ = ast.unparse(item.annotation)
                        self.attrs[node.name][item.target.id] = (typ, " ".join(comment))

    @staticmethod
    def _sig(f: ast.FunctionDef, skip_first: bool) -> str:
        args = f.args
        if skip_first:
            args = ast.arguments(
                posonlyargs=args.posonlyargs,
                args=args.args[1:],
                vararg=args.vararg,
                kwonlyargs=args.kwonlyargs,
                kw_defaults=args.kw_defaults,
                kwarg=args.kwarg,
                defaults=args.defaults,
            )
        ret = f" -> {ast.unparse(f.returns)}" if f.returns else ""
        return f"({ast.unparse(args)}){ret}".replace("_Bytes", "bytes | str")


# --- signatures of the pure-Python code --------------------------------------------------------


def py_sig(f: Any, drop_self: bool = False) -> str:
    """A signature with the annotations as written (they are strings under PEP 563)."""
    sig = inspect.signature(f)
    parts = []
    seen_kwonly = False
    params = list(sig.parameters.values())
    if drop_self and params and params[0].name in ("self", "cls"):
        params = params[1:]
    for p in params:
        if p.kind is p.KEYWORD_ONLY and not seen_kwonly:
            parts.append("*")
            seen_kwonly = True
        s = p.name
        if p.kind is p.VAR_POSITIONAL:
            s, seen_kwonly = "*" + s, True
        elif p.kind is p.VAR_KEYWORD:
            s = "**" + s
        if p.annotation is not p.empty:
            s += f": {ann(p.annotation)}"
        if p.default is not p.empty:
            d = default_name(f, p.default)
            s += f" = {d}" if p.annotation is not p.empty else f"={d}"
        parts.append(s)
    ret = f" -> {ann(sig.return_annotation)}" if sig.return_annotation is not sig.empty else ""
    return f"({', '.join(parts)}){ret}"


def default_name(f: Any, default: Any) -> str:
    """A default that is a public constant of the function's module, by its name."""
    mod = sys.modules.get(getattr(f, "__module__", ""), None)
    for name in getattr(mod, "__all__", ()):
        if getattr(mod, name) is default and isinstance(default, tuple | list | dict):
            return name
    return repr(default)


def ann(a: Any) -> str:
    if isinstance(a, str):
        return a
    if isinstance(a, type):
        return a.__qualname__
    return repr(a).replace("typing.", "")


# --- writing -----------------------------------------------------------------------------------


def code(s: str) -> str:
    return f"```python\n{s}\n```"


def ext_class(out: list[str], stub: Stub, name: str, public: str) -> None:
    cls = getattr(ext, name)
    bases = stub.bases.get(name, [])
    head = f"class {public}({', '.join(bases)})" if bases else f"class {public}"
    out.append(f"### `{public}`\n")
    out.append(code(head))
    out.append("")
    out.append(doc(cls))
    out.append("")
    for attr, (typ, comment) in stub.attrs.get(name, {}).items():
        out.append(f"#### `{public}.{attr}: {typ}` (attribute)\n")
        out.append(comment or "*(no docstring)*")
        out.append("")
    for member in stub.members.get(name, []):
        if member.startswith("_") and member != "__new__":
            continue
        qual = f"{name}.{member}"
        sig = stub.sigs[qual]
        if member == "__new__":
            out.append(f"#### `{public}{sig.replace(' -> Self', '')}`\n")
            continue  # the class docstring says how to make one
        obj = getattr(cls, member)
        if sig.startswith(":"):
            out.append(f"#### `{public}.{member}{sig}` (property)\n")
        else:
            out.append(f"#### `{public}.{member}{sig}`\n")
        out.append(doc(obj))
        out.append("")


def ext_function(out: list[str], stub: Stub, name: str, obj: Any) -> None:
    sig = stub.sigs[name] if name in stub.sigs else py_sig(obj)
    out.append(f"### `{name}{sig}`\n")
    out.append(doc(obj))
    out.append("")


def py_module(out: list[str], mod: types.ModuleType, title: str) -> None:
    out.append(f"## `{mod.__name__}`: {title}\n")
    out.append(doc(mod))
    out.append("")
    for name in mod.__all__:
        obj = getattr(mod, name)
        if inspect.isclass(obj):
            init = vars(obj).get("__init__")
            sig = py_sig(init, drop_self=True) if init else ""
            out.append(f"### `class {name}{sig.replace(' -> None', '')}`\n")
            out.append(doc(obj))
            out.append("")
            for member, value in vars(obj).items():
                if member.startswith("_"):
                    continue
                if isinstance(value, property):
                    ret = value.fget.__annotations__.get("return", "") if value.fget else ""
                    out.append(f"#### `{name}.{member}: {ann(ret)}` (property)\n")
                    out.append(doc(value))
                    out.append("")
                elif inspect.isfunction(value):
                    coro = "async " if inspect.iscoroutinefunction(value) else ""
                    sig = py_sig(value, drop_self=True)
                    out.append(f"#### `{coro}{name}.{member}{sig}`\n")
                    out.append(doc(value))
                    out.append("")
        elif inspect.isfunction(obj):
            out.append(f"### `{name}{py_sig(obj)}`\n")
            out.append(doc(obj))
            out.append("")
        else:
            out.append(f"### `{name}`\n")
            out.append(code(f"{name} = {pretty(obj)}"))
            comment = attribute_comment(mod, name)
            if comment:
                out.append("")
                out.append(comment)
            out.append("")


def pretty(obj: object) -> str:
    if isinstance(obj, tuple) and len(repr(obj)) > 90:
        return "(\n" + "".join(f"    {x!r},\n" for x in obj) + ")"
    return repr(obj).replace("typing.", "")


def attribute_comment(mod: types.ModuleType, name: str) -> str:
    """The ``#:`` comment lines above a module attribute, as Sphinx reads them."""
    src = inspect.getsource(mod).splitlines()
    for i, line in enumerate(src):
        if line.startswith((f"{name} =", f"{name}:")):
            j = i
            lines = []
            while j > 0 and src[j - 1].startswith("#:"):
                j -= 1
                lines.insert(0, src[j][2:].removeprefix(" "))
            return "\n".join(lines)
    return ""


def cli_reference(out: list[str]) -> None:
    parser = raftkv.cli.build_parser()
    out.append("## The command line: `raftkv`\n")
    out.append(doc(raftkv.cli))
    out.append("")
    out.append("`raftkv --version` prints the package's version. Each command's arguments, as")
    out.append("`raftkv COMMAND --help` shows them:\n")
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        out.append(f"### `raftkv {name}`\n")
        out.append(p.description or "")
        out.append("")
        out.append("| argument | default | help |")
        out.append("|---|---|---|")
        for a in p._actions:
            if isinstance(a, argparse._HelpAction):
                continue
            names = ", ".join(a.option_strings) if a.option_strings else (a.metavar or a.dest)
            if a.choices:
                names += " {" + ",".join(map(str, a.choices)) + "}"
            elif a.option_strings and a.nargs != 0:
                names += f" {a.metavar or a.dest.upper()}"
            default = "required" if a.required else ("" if a.default is None else repr(a.default))
            if a.nargs == 0:
                default = ""
            help_text = " ".join((a.help or "").split()).replace("|", "\\|")
            out.append(f"| `{names}` | {default} | {help_text} |")
        out.append("")


def generate() -> str:
    stub = Stub(pathlib.Path(ext.__file__).with_name("_raftkv.pyi"))
    listed = [n for _, names in SECTIONS for n in names]
    if sorted(listed) != sorted(raftkv.__all__):
        missing = sorted(set(raftkv.__all__) - set(listed))
        extra = sorted(set(listed) - set(raftkv.__all__))
        raise SystemExit(
            f"gen_api_docs: SECTIONS is not raftkv.__all__: add {missing}, drop {extra}"
        )
    out = [
        "# raftkv Python API reference",
        "",
        "<!-- Generated by scripts/gen_api_docs.py from the installed package's docstrings and",
        "     stubs; do not edit by hand. CI (scripts/lint) checks that it is up to date. -->",
        "",
        "The package `raftkv` (`pip install .` at the root of the repository). Keys and values",
        "are `bytes`; a `str` is accepted and encoded as UTF-8. The design behind it is in",
        "[design.md](design.md).",
        "",
        "Contents: "
        + ", ".join(f"[{t}](#{slug(t)})" for t, _ in SECTIONS)
        + ", [`raftkv.aio`](#raftkvaio-the-asyncio-client), "
        "[`raftkv.faults`](#raftkvfaults-fault-schedules), "
        "[`raftkv.procs`](#raftkvprocs-server-processes), "
        "[the pytest plugin](#the-pytest-plugin), [the command line](#the-command-line-raftkv).",
        "",
        "## `raftkv`",
        "",
        doc(raftkv),
        "",
    ]
    for title, names in SECTIONS:
        out.append(f"## {title}\n")
        for name in names:
            obj = getattr(raftkv, name)
            if name == "CheckResult":
                out.append("### `CheckResult`\n")
                out.append(attribute_comment(raftkv, "CheckResult"))
                out.append("")
            elif inspect.isclass(obj) and obj.__name__ in stub.bases:
                ext_class(out, stub, obj.__name__, name)
            else:
                ext_function(out, stub, name, obj)
    py_module(out, raftkv.aio, "the asyncio client")
    py_module(out, faults, "fault schedules")
    py_module(out, procs, "server processes")
    out.append("## The pytest plugin\n")
    out.append(doc(pytest_plugin))
    out.append("")
    cli_reference(out)
    text = "\n".join(out)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.rstrip() + "\n"


def slug(title: str) -> str:
    return "".join(c for c in title.lower().replace(" ", "-") if c.isalnum() or c == "-")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare, do not write")
    ap.add_argument("--out", type=pathlib.Path, default=OUT)
    args = ap.parse_args()
    text = generate()
    if args.check:
        have = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if have != text:
            diff = difflib.unified_diff(
                have.splitlines(), text.splitlines(), str(args.out), "generated", lineterm=""
            )
            print("\n".join(textwrap.shorten(line, 200) for line in list(diff)[:60]))
            print(
                f"{args.out} is out of date: with the package built and installed in the venv "
                "(pip install .), run: python scripts/gen_api_docs.py",
                file=sys.stderr,
            )
            return 1
        print(f"{args.out} is up to date")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
