"""Mutation sensitivity of the fast tests (issue 15): plant algorithmic bugs in the solvers and the
oracle, one at a time, and count how many the fast tests catch.

    .venv/bin/python benchmarks/mutation.py                 # every mutant -> results/mutation.md
    .venv/bin/python benchmarks/mutation.py --files mapbench/solvers/pgdm.py --limit 20
    .venv/bin/python benchmarks/mutation.py --list          # the mutants, without running them

The mutants are made with ``ast`` in every function and method of ``TARGETS``; docstrings,
imports, annotations, ``raise``/``assert`` validation branches and error messages are left alone:

    sign            a + b <-> a - b;  -a -> a
    dropped-term    a +- b -> a;  w * a -> a (the weight, written first, dropped);  a / b -> a
    ignored-input   the measurement replaced by zeros (``IGNORED_INPUTS``); a keyword argument
                    dropped where the callee has a default for it
    frozen-iterate  an assignment to an already bound variable deleted inside a loop
    dropped-update  the same outside a loop, or a call statement (``rule.reset()``) deleted
    noise-level     one use of a loop pair ``for t, s in ...`` swapped (t -> s); ``a[-1] <-> a[0]``;
                    ``a[:-1] <-> a[1:]``; two adjacent level/step arguments swapped
                    (``solve(r, sigma_y, eps) -> solve(r, eps, sigma_y)``, names in ``LEVELS``)
    constant        0 <-> 1, 2 -> 1, x -> x / 2 (not indices, dimensions or tiny guards), bools
    default         the same on a default argument value (the published defaults)
    condition       ``if c`` -> ``if not c`` (also ``while`` and ``a if c else b``)
    registry        an entry of a registry's hyper-parameter dict dropped, or its flag flipped

A mutant that does not compile or compiles to the original bytecode is not generated; duplicates
are dropped. ``EQUIVALENT`` lists mutants shown by hand to behave like the original (each with the
reason); they are reported but not scored.

Running: torch, mapbench and what the test files import are loaded once, here. A clean run of the
fast tests (``FAST_TESTS``) must pass first; it records each test's duration and which target
functions it executes (``sys.setprofile``; a fixture's work counts for its whole test file). Each
mutant then runs in a forked child: the mutated function's code is swapped into the live function
objects (``__code__``, ``__defaults__``, ``__kwdefaults__``, so every reference, the registry's
included, sees it; a mutated module-level statement is re-executed and every module's reference
to the old value rebound), and ``pytest.main([...], "-x")`` runs in-process on the tests that
execute that function (the mutated file's own test files first; ``--all-tests``: every fast test).
A failing or erroring test kills the mutant, and so does running past ``--timeout-factor`` times
the clean time of its tests (reported as such). A mutant in code that no fast test executes
survives without being run. Children run on one intra-op thread (``torch.set_num_threads`` is
pinned to 1) and ``--jobs`` at a time.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402 - the thread settings above must precede torch's import
import ast  # noqa: E402
import copy  # noqa: E402
import glob  # noqa: E402
import importlib  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# --- what is mutated, and which tests run ---------------------------------------------------------
TARGETS = ["mapbench/solvers/*.py", "mapbench/oracle.py"]
FAST_TESTS = ["tests/test_ref_*.py", "tests/test_solvers.py", "tests/test_oracle*.py",
              "tests/test_gmm.py"]
# names (variables or attributes) carrying the measurement, and what ignoring them means
IGNORED_INPUTS = {"y": "0 * {}", "y_bar": "0 * {}", "x_init": "None"}
# names of noise levels and step sizes: two adjacent call arguments with such names are swapped
LEVELS = r"sigma\w*|eps\w*|t|s|T|tau\w*|handoff|level\w*|rho|lr|r_t|c|var"
# parameters the runner always passes: their defaults are never used, so they are not mutated
RUNNER_PARAMS = {"iters", "x_init", "sigma_y", "generators"}
# arguments that only give a shape, a device or a dtype (mutating them is equivalent by
# construction): call name -> positions (None: all), and attributes read off a tensor
SHAPE_ONLY = {"randn_like_per_image": None, "randn_like": None, "zeros_like": None,
              "ones_like": None, "empty_like": None, "len": None, "initial_noise": (1,)}
META_ATTRS = {"device", "dtype", "shape", "ndim"}
# calls whose arguments are dimensions, shapes or dtypes (a mutant there crashes or mixes images:
# not an algorithmic bug) or commutative: their constants are kept, their arguments not swapped
SHAPE_CALLS = {"view", "reshape", "permute", "expand", "repeat", "repeat_interleave", "flatten",
               "sum", "mean", "amax", "argmax", "norm", "logsumexp", "diagonal", "unsqueeze",
               "squeeze", "stack", "cat", "transpose", "zeros", "ones", "eye", "arange", "full",
               "empty", "einsum", "to", "max", "min", "range", "getattr", "setattr"}
SHAPE_KEYWORDS = {"dim", "keepdim", "dim1", "dim2", "dtype", "device"}
# calls never mutated inside: error messages and type checks
SKIP_CALLS = {"UserError", "ValueError", "TypeError", "RuntimeError", "isinstance", "print"}
# constants below this are numerical guards (``clamp_min(1e-12)``): halving them changes nothing
TINY = 1e-6
# known-equivalent mutants, "file::unit::category::old -> new" (the report's columns) -> why.
# Add one only with a reason a reader can check; these are listed, not scored.
EQUIVALENT: dict[str, str] = {}


# --- making the mutants ---------------------------------------------------------------------------
@dataclass
class Mutant:
    id: int
    file: str
    unit: str                  # the top-level function, class or module-level name that changes
    kind: str                  # "def", "class" or "assign"
    line: int
    category: str
    old: str
    new: str
    source_line: str
    code: str = field(repr=False, default="")                   # the mutated unit, unparsed
    tree: ast.AST | None = field(repr=False, default=None)      # ... and as compiled

    @property
    def key(self) -> str:
        return f"{self.file}::{self.unit}::{self.category}::{self.old} -> {self.new}"

    def row(self) -> dict:
        return {k: getattr(self, k) for k in ("id", "file", "unit", "line", "category", "old",
                                              "new", "source_line")}


@dataclass
class Ctx:
    """Where a node sits."""
    func: ast.AST | None = None        # the enclosing top-level function or method
    bound: dict = field(default_factory=dict)      # name or self.attr -> first line binding it
    loop: bool = False
    pairs: dict = field(default_factory=dict)      # loop variable -> the variables moving with it
    shape: bool = False                # an index, a dimension, a shape: constants kept
    default: bool = False              # a default argument value
    registry: bool = False             # a module-level registry

    def but(self, **kw) -> Ctx:
        return Ctx(**{**self.__dict__, **kw})


DELETE = object()


class FileMutants:
    """The mutants of one file of ``module``."""

    def __init__(self, path: Path, module):
        self.module, self.rel = module, str(path.relative_to(ROOT))
        text = path.read_text()
        self.lines, self.tree = text.splitlines(), ast.parse(text)
        self.imports = [s for s in self.tree.body if isinstance(s, (ast.Import, ast.ImportFrom))]

    def units(self):
        """``(index in the module body, name, kind)`` of every function, class and registry."""
        for i, stmt in enumerate(self.tree.body):
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                yield i, stmt.name, "class" if isinstance(stmt, ast.ClassDef) else "def"
            elif isinstance(stmt, (ast.Assign, ast.AnnAssign)) and stmt.value is not None and \
                    any(isinstance(n, ast.Dict) for n in ast.walk(stmt.value)):
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                yield i, ",".join(t.id for t in targets if isinstance(t, ast.Name)), "assign"

    def compile(self, unit: ast.AST):
        """``unit`` compiled after the module's imports, positions kept: both shape the bytecode
        (3.11 calls an imported module's function without LOAD_METHOD, and a call spanning lines
        differently), so an unmutated unit compiles to exactly the live module's code."""
        return compile(ast.Module(self.imports + [unit], type_ignores=[]), self.rel, "exec",
                       dont_inherit=True)

    def execute(self, unit: ast.AST) -> dict:
        """The namespace after executing ``unit`` in a copy of the module's globals."""
        ns = dict(vars(self.module))
        exec(self.compile(unit), ns)
        return ns

    def mutants(self):
        for index, unit, kind in self.units():
            root = self.tree.body[index]
            for path, node, ctx in self.walk(root, [], Ctx(registry=kind == "assign",
                                                           bound=_bound_lines(root))):
                for category, repl, *label in self.operators(node, path, ctx):
                    yield self.make(index, unit, kind, path, node, category, repl, *label)

    # ----- where to mutate
    def walk(self, node, path, ctx: Ctx):
        """``(path, node, ctx)`` of every node that may be mutated, in source order."""
        if isinstance(node, (ast.Raise, ast.Assert, ast.Import, ast.ImportFrom, ast.Global,
                             ast.Nonlocal, ast.JoinedStr, ast.Pass)):
            return
        if isinstance(node, ast.Call) and _name(node.func) in SKIP_CALLS:
            return
        if isinstance(node, ast.If) and all(isinstance(s, ast.Raise) for s in node.body):
            for i, s in enumerate(node.orelse):          # a validation branch: only its else
                yield from self.walk(s, path + [("orelse", i)], ctx)
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and ctx.func is None:
            attrs = {k: v for k, v in ctx.bound.items() if "." in k}   # self.x: class-wide
            ctx = ctx.but(func=node, bound={**_bound_lines(node), **attrs})
        yield path, node, ctx
        for name, value in ast.iter_fields(node):
            if name in ("decorator_list", "annotation", "returns", "type_comment", "type_params"):
                continue
            if isinstance(node, ast.ClassDef) and name != "body":
                continue
            if isinstance(node, ast.arguments) and name in ("defaults", "kw_defaults"):
                params = node.kwonlyargs if name == "kw_defaults" else \
                    (node.posonlyargs + node.args)[len(node.posonlyargs + node.args) - len(value):]
                for i, (a, v) in enumerate(zip(params, value)):
                    if v is not None and a.arg not in RUNNER_PARAMS:
                        yield from self.walk(v, path + [(name, i)], ctx.but(default=True))
                continue
            if isinstance(node, ast.Attribute) and node.attr in META_ATTRS:
                continue
            sub = ctx
            if isinstance(node, (ast.For, ast.While)) and name == "body":
                sub = ctx.but(loop=True, pairs={**ctx.pairs, **_pairs(node)})
            if (isinstance(node, ast.Subscript) and name == "slice"
                    or isinstance(node, ast.Call) and name == "args" and _name(node.func) in SHAPE_CALLS
                    or isinstance(node, ast.keyword) and node.arg in SHAPE_KEYWORDS):
                sub = ctx.but(shape=True)
            items = value if isinstance(value, list) else [value]
            for i, item in enumerate(items):
                if not isinstance(item, ast.AST) or (i == 0 and name == "body" and _docstring(item)):
                    continue
                if isinstance(node, ast.ClassDef) and not isinstance(item, ast.FunctionDef):
                    continue                             # a class: only its methods
                if isinstance(node, ast.Call) and name in ("args", "keywords") and \
                        _name(node.func) in SHAPE_ONLY and (name == "keywords" or
                                                             SHAPE_ONLY[_name(node.func)] is None
                                                             or i in SHAPE_ONLY[_name(node.func)]):
                    continue
                yield from self.walk(item, path + [(name, i if isinstance(value, list) else None)], sub)

    # ----- how to mutate: (category, replacement node or DELETE[, (old, new) to show])
    def operators(self, node, path, ctx: Ctx):
        if ctx.registry:
            if isinstance(node, ast.Dict) and any(isinstance(v, ast.Constant) for v in node.values):
                for i in range(len(node.keys)):
                    yield "registry", ast.Dict(node.keys[:i] + node.keys[i + 1:],
                                               node.values[:i] + node.values[i + 1:])
            if isinstance(node, ast.Constant) and isinstance(node.value, bool):
                yield "registry", ast.Constant(not node.value)
            return
        if ctx.func is None:
            return
        if isinstance(node, ast.Constant):
            v = node.value
            if ctx.shape or type(v) not in (bool, int, float) or 0 < abs(v) < TINY:
                return
            new = (not v) if isinstance(v, bool) else \
                type(v)({0: 1, 1: 0, 2: 1}.get(v, v / 2 if isinstance(v, float) else v // 2))
            yield "default" if ctx.default else "constant", ast.Constant(new)
        elif ctx.default:
            return
        elif isinstance(node, ast.stmt) and path and path[-1][1] is not None:
            yield from self._statement(node, ctx)
        if isinstance(node, ast.BinOp) and not any(isinstance(o, (ast.List, ast.Tuple))
                                                   for o in (node.left, node.right)):
            a, b = node.left, node.right
            if isinstance(node.op, (ast.Add, ast.Sub)):
                yield "sign", ast.BinOp(a, ast.Sub() if isinstance(node.op, ast.Add) else ast.Add(), b)
                yield "dropped-term", a
            elif isinstance(node.op, ast.Mult) and not (_number(a) or _number(b)):
                yield "dropped-term", b
            elif isinstance(node.op, ast.Div) and not _number(b):
                yield "dropped-term", a
        elif isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub) and not _number(node.operand):
                yield "sign", node.operand
            elif isinstance(node.op, ast.Not):
                yield "condition", node.operand
        elif isinstance(node, (ast.Name, ast.Attribute)) and isinstance(node.ctx, ast.Load):
            name = _name(node)
            if name in IGNORED_INPUTS:
                yield "ignored-input", _fill(IGNORED_INPUTS[name], node)
            for other in ctx.pairs.get(name, ()) if isinstance(node, ast.Name) else ():
                yield "noise-level", ast.Name(other, ast.Load())
        elif isinstance(node, ast.Subscript):
            k, s = _signed_int(node.slice), node.slice
            if k is not None:                            # a[-1] <-> a[0]
                yield "noise-level", ast.Subscript(node.value, _int(0 if k else -1), node.ctx)
            if isinstance(s, ast.Slice) and s.step is None and (s.lower is None) != (s.upper is None):
                k = _signed_int(s.upper if s.lower is None else s.lower)
                if k:                                    # a[:-k] <-> a[k:]
                    new = ast.Slice(_int(-k), None) if s.lower is None else ast.Slice(None, _int(-k))
                    yield "noise-level", ast.Subscript(node.value, new, node.ctx)
        elif isinstance(node, ast.Call):
            yield from self._call(node)
        elif isinstance(node, (ast.If, ast.While, ast.IfExp)):
            yield "condition", type(node)(**{**{f: getattr(node, f) for f in node._fields},
                                             "test": ast.UnaryOp(ast.Not(), node.test)})

    def _statement(self, stmt, ctx: Ctx):
        if isinstance(stmt, (ast.Assign, ast.AugAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            keys = [_target(n) for t in targets for n in ast.walk(t)
                    if isinstance(getattr(n, "ctx", None), ast.Store)]
            base = stmt.value
            while isinstance(base, (ast.Call, ast.Attribute)):
                base = base.func if isinstance(base, ast.Call) else base.value
            conversion = base is not stmt.value and ast.unparse(base) == ast.unparse(targets[0])
            if not conversion and all(ctx.bound.get(k, math.inf) < stmt.lineno for k in keys if k):
                yield ("frozen-iterate" if ctx.loop else "dropped-update"), DELETE
        elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
            yield "dropped-update", DELETE

    def _call(self, call: ast.Call):
        name = _name(call.func)
        if name not in SHAPE_CALLS:
            args = [_unwrap_float(a) for a in call.args]
            for i in range(len(args) - 1):
                if _level(args[i]) and _level(args[i + 1]) and ast.dump(args[i]) != ast.dump(args[i + 1]):
                    new = copy.copy(call)
                    new.args = call.args[:i] + [call.args[i + 1], call.args[i]] + call.args[i + 2:]
                    a, b = ast.unparse(call.args[i]), ast.unparse(call.args[i + 1])
                    yield "noise-level", new, (f"{_name(call.func)}(.., {a}, {b}, ..)",
                                               f"{_name(call.func)}(.., {b}, {a}, ..)")
        callee = getattr(self.module, name, None) if isinstance(call.func, ast.Name) else None
        try:
            params = inspect.signature(callee).parameters if callable(callee) else {}
        except (TypeError, ValueError):
            params = {}
        for i, kw in enumerate(call.keywords):
            if kw.arg in params and params[kw.arg].default is not inspect.Parameter.empty:
                new = copy.copy(call)
                new.keywords = call.keywords[:i] + call.keywords[i + 1:]
                yield "ignored-input", new, (f"{name}(.., {ast.unparse(kw)})", f"{name}(..)")

    def make(self, index, unit, kind, path, node, category, repl, label=None) -> Mutant:
        """The unit ``index`` with ``node`` (at ``path``) replaced by ``repl`` or deleted;
        ``label``: (old, new) to show in place of the nodes."""
        tree = copy.deepcopy(self.tree.body[index])
        parent = tree
        for name, i in path[:-1]:
            parent = getattr(parent, name) if i is None else getattr(parent, name)[i]
        name, i = path[-1]
        show = (lambda n: n.test) if isinstance(node, (ast.If, ast.While)) else (lambda n: n)
        if repl is DELETE:
            body = getattr(parent, name)
            del body[i]
            body[:] = body or [ast.Pass()]
            new = "(deleted)"
        else:
            repl = ast.copy_location(copy.deepcopy(repl), node)
            if i is None:
                setattr(parent, name, repl)
            else:
                getattr(parent, name)[i] = repl
            new = _src(show(repl))
        ast.fix_missing_locations(tree)
        old, new = label or (_src(show(node)), new)
        return Mutant(0, self.rel, unit, kind, node.lineno, category, old, new,
                      self.lines[node.lineno - 1].strip(), ast.unparse(tree), tree)


def _name(node) -> str:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""


def _src(node) -> str:
    s = ast.unparse(node).replace("\n", "; ")
    return s if len(s) <= 90 else s[:87] + "..."


def _number(node) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) in (int, float)


def _signed_int(node):
    """The value of an integer literal ``k`` or ``-k``, else None."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        k = _signed_int(node.operand)
        return None if k is None else -k
    return node.value if isinstance(node, ast.Constant) and type(node.value) is int else None


def _int(k: int):
    return ast.UnaryOp(ast.USub(), ast.Constant(-k)) if k < 0 else ast.Constant(k)


def _unwrap_float(a):
    return a.args[0] if isinstance(a, ast.Call) and _name(a.func) == "float" and len(a.args) == 1 else a


def _level(a) -> bool:
    """A noise level or step size (by its name, ``LEVELS``), a grid point or a number."""
    if isinstance(a, (ast.Name, ast.Attribute)):
        return re.fullmatch(LEVELS, _name(a)) is not None
    return _number(a) or isinstance(a, ast.Subscript) and (
        _signed_int(a.slice) is not None or isinstance(a.slice, ast.BinOp))


def _target(t):
    """``x`` for a name, ``self.x`` for an attribute of a name, else None."""
    if isinstance(t, ast.Name):
        return t.id
    if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name):
        return f"{t.value.id}.{t.attr}"
    return None


def _bound_lines(unit) -> dict[str, int]:
    """The first line binding each name (or ``self.attr``) in ``unit``; parameters: 0."""
    first = {a.arg: 0 for a in ast.walk(unit) if isinstance(a, ast.arg)}
    for n in ast.walk(unit):
        key = _target(n) if isinstance(getattr(n, "ctx", None), ast.Store) else None
        if key:
            first[key] = min(first.get(key, n.lineno), n.lineno)
    return first


def _pairs(loop) -> dict:
    """Loop variables that move together: ``for t, s in zip(...)`` (not enumerate's index)."""
    if not isinstance(loop, ast.For):
        return {}
    target = loop.target
    if isinstance(loop.iter, ast.Call) and _name(loop.iter.func) == "enumerate" and \
            isinstance(target, ast.Tuple) and len(target.elts) == 2:
        target = target.elts[1]
    names = [n.id for n in getattr(target, "elts", []) if isinstance(n, ast.Name)]
    return {n: [o for o in names if o != n] for n in names} if len(names) > 1 else {}


def _docstring(stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and \
        isinstance(stmt.value.value, str)


def _fill(template: str, node):
    """``template`` ("0 * {}") parsed, with ``node`` in the hole."""
    tree = ast.parse(template.format("_HOLE_"), mode="eval").body
    for n in ast.walk(tree):
        for name, value in ast.iter_fields(n):
            if isinstance(value, ast.Name) and value.id == "_HOLE_":
                setattr(n, name, copy.deepcopy(node))
    return copy.deepcopy(node) if isinstance(tree, ast.Name) and tree.id == "_HOLE_" else tree


def _code_key(co):
    """Bytecode, names and constants (recursively), not positions."""
    consts = tuple(_code_key(c) if inspect.iscode(c) else (type(c).__name__, repr(c))
                   for c in co.co_consts)
    return co.co_code, co.co_names, co.co_varnames, co.co_freevars, consts


def _functions(obj) -> dict:
    """``{name: function}`` of a function (``""``) or of a class's methods."""
    if inspect.isfunction(obj):
        return {"": obj}
    out = {}
    for k, v in vars(obj).items():
        v = getattr(v, "__func__", None) or getattr(v, "fget", None) or v
        if inspect.isfunction(v):
            out[k] = v
    return out


def _fingerprint(ns, unit, kind):
    if kind == "assign":
        return None
    return {k: (_code_key(f.__code__), repr(f.__defaults__), repr(f.__kwdefaults__))
            for k, f in _functions(ns[unit]).items()}


def _module(file: str):
    name = ".".join(Path(file).with_suffix("").parts).removesuffix(".__init__")
    return importlib.import_module(name)


def generate(files: list[Path]):
    """The mutants of ``files`` (compiling, differing from the original, deduplicated) and the
    counts of those left out, by (file, reason)."""
    out, skipped = [], Counter()
    for path in files:
        fm = FileMutants(path, _module(str(path.relative_to(ROOT))))
        original, stale = {}, set()
        for index, unit, kind in fm.units():
            original[unit] = _fingerprint(fm.execute(fm.tree.body[index]), unit, kind)
            live = getattr(fm.module, unit, None) if kind != "assign" else None
            if kind != "assign" and (live is None or {k: v[0] for k, v in original[unit].items()}
                                     != {k: _code_key(f.__code__) for k, f in _functions(live).items()}):
                print(f"WARNING: {fm.rel}: {unit} changed on disk since it was imported: "
                      "its mutants are left out (run again)", file=sys.stderr)
                stale.add(unit)
        seen = set()
        for m in fm.mutants():
            if m.unit in stale:
                skipped[fm.rel, "in code changed on disk during the run"] += 1
                continue
            if (m.unit, m.code) in seen:
                skipped[fm.rel, "duplicate"] += 1
                continue
            seen.add((m.unit, m.code))
            try:
                ns = fm.execute(m.tree)
            except Exception:                      # noqa: BLE001 - a mutant that does not build
                skipped[fm.rel, "not compiling"] += 1
                continue
            if m.kind != "assign" and _fingerprint(ns, m.unit, m.kind) == original[m.unit]:
                skipped[fm.rel, "same bytecode"] += 1
                continue
            out.append(m)
    for i, m in enumerate(out):
        m.id = i
    return out, skipped


# --- running them ---------------------------------------------------------------------------------
def apply(m: Mutant):
    """Swap mutant ``m`` into the live modules (in a child process)."""
    module = _module(m.file)
    fm = FileMutants(ROOT / m.file, module)
    if m.kind == "assign":
        old = {n: vars(module)[n] for n in m.unit.split(",")}
        exec(fm.compile(m.tree), vars(module))
        for mod in list(sys.modules.values()):
            d = getattr(mod, "__dict__", {})
            for k, v in list(d.items()):
                for n, o in old.items():
                    if v is o:
                        d[k] = vars(module)[n]
        return
    live, new = _functions(getattr(module, m.unit)), _functions(fm.execute(m.tree)[m.unit])
    for k, f in new.items():
        g = live[k]
        if g.__code__.co_freevars != f.__code__.co_freevars:
            raise RuntimeError(f"{m.unit}.{k}: the mutant's free variables differ")
        g.__code__, g.__defaults__, g.__kwdefaults__ = f.__code__, f.__defaults__, f.__kwdefaults__


class Recorder:
    """pytest plugin: the first failure, each test's duration and (with ``code_units``, under
    ``sys.setprofile(recorder.profile)``) the target units each test executes."""

    def __init__(self, code_units=None):
        self.code_units = code_units or {}
        self.current = None
        self.failure = None
        self.durations = defaultdict(float)
        self.hits = defaultdict(set)               # nodeid or "file::<setup>" -> units

    def profile(self, frame, event, arg):
        if event == "call" and self.current is not None:
            unit = self.code_units.get(frame.f_code)
            if unit is not None:
                self.hits[self.current].add(unit)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_setup(self, item):
        self.current = item.nodeid.split("::")[0] + "::<setup>"  # fixtures may serve the file
        yield
        self.current = None

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item):
        self.current = item.nodeid
        yield
        self.current = None

    def pytest_runtest_logreport(self, report):
        self.durations[report.nodeid] += report.duration
        if report.failed:
            self._fail(report)

    def pytest_collectreport(self, report):
        if report.failed:
            self._fail(report)

    def _fail(self, report):
        if self.failure is None:
            crash = getattr(report.longrepr, "reprcrash", None)
            lines = (crash.message if crash else str(report.longrepr)).strip().splitlines()
            self.failure = {"test": report.nodeid, "message": (lines or [""])[0][:200]}


def run_pytest(tests: list[str], recorder: Recorder) -> int:
    import torch
    torch.set_num_threads(1)
    torch.set_num_threads = lambda n: None          # the tests' own thread settings are ignored
    return int(pytest.main([*tests, "-x", "-q", "-p", "no:cacheprovider", "--no-header"],
                           plugins=[recorder]))


def fork(fn, log: Path) -> int:
    """Run ``fn() -> (exit code, result)`` in a forked child, output to ``log`` and the result
    to ``log.json``; returns the child's pid."""
    pid = os.fork()
    if pid:
        return pid
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        rc, result = fn()
        log.with_suffix(".json").write_text(json.dumps(result))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    except BaseException as e:                      # noqa: BLE001 - whatever the child hit
        log.with_suffix(".json").write_text(json.dumps(
            {"failure": {"test": "<harness>", "message": f"{type(e).__name__}: {e}"[:200]}}))
        os._exit(3)


def clean_run(tests, mutants, tmp: Path):
    """The unmutated fast tests: they must pass; records durations and coverage of units."""
    code_units = {}
    for m in mutants:
        if m.kind != "assign":
            stack = [f.__code__ for f in _functions(getattr(_module(m.file), m.unit)).values()]
            while stack:
                co = stack.pop()
                code_units[co] = (m.file, m.unit)
                stack += [c for c in co.co_consts if inspect.iscode(c)]

    def child():
        rec = Recorder(code_units)
        sys.setprofile(rec.profile)
        rc = run_pytest(tests, rec)
        sys.setprofile(None)
        return rc, {"durations": rec.durations,
                    "hits": {k: sorted(map(list, v)) for k, v in rec.hits.items()}}

    log = tmp / "clean.log"
    t0 = time.time()
    _, status, usage = os.wait4(fork(child, log), 0)
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        sys.stdout.write(log.read_text()[-6000:])
        sys.exit(f"the fast tests fail without any mutant (pytest exit {rc}): fix them first")
    clean = json.loads(log.with_suffix(".json").read_text())
    clean["wall"], clean["cpu"] = time.time() - t0, usage.ru_utime + usage.ru_stime
    return clean


def select(m: Mutant, clean, all_tests: bool) -> list[str]:
    """The tests a mutant runs: those executing its unit (every test for a registry mutant),
    by file, files named after the mutated file first, then the quickest files."""
    dur, hits = clean["durations"], clean["hits"]
    unit = [m.file, m.unit]
    files = {k.split("::")[0] for k, v in hits.items() if k.endswith("::<setup>") and unit in v}
    ids = [t for t in dur if all_tests or m.kind == "assign" or t.split("::")[0] in files
           or unit in hits.get(t, [])]
    by_file = defaultdict(list)
    for t in ids:
        by_file[t.split("::")[0]].append(t)
    stem = Path(m.file).stem.removeprefix("__init__")
    order = sorted(by_file, key=lambda f: (not stem or stem not in f, sum(dur[t] for t in by_file[f])))
    return [t for f in order for t in by_file[f]]


def run_mutants(mutants, clean, args, tmp: Path):
    """Each mutant in a forked child, ``args.jobs`` at a time; ``{id: result}``."""
    overhead = 10 + 2 * max(0.0, clean["wall"] - sum(clean["durations"].values()) )
    results, todo, running = {}, list(mutants), {}

    def finish(m, r):
        results[m.id] = r
        print(f"[{len(results)}/{len(mutants)}] {r['status']:8s} {r['seconds']:5.1f} s "
              f"({r.get('cpu', 0):4.1f} s cpu) {m.file}:{m.line} {m.category}: {m.old} -> {m.new}"
              + (f"  [{r['note']}]" if r.get("note") else ""), flush=True)

    while todo or running:
        while todo and len(running) < args.jobs:
            m = todo.pop(0)
            tests = select(m, clean, args.all_tests)
            if not tests:
                finish(m, {"status": "survived", "seconds": 0.0, "note": "no fast test executes it"})
                continue
            limit = args.timeout_factor * sum(clean["durations"][t] for t in tests) + overhead

            def child(m=m, tests=tests):
                apply(m)
                rec = Recorder()
                return run_pytest(tests, rec), {"failure": rec.failure}

            log = tmp / f"m{m.id}.log"
            running[fork(child, log)] = (m, time.time(), limit, log)
        pid, status, usage = os.wait3(os.WNOHANG)
        if pid == 0:
            for p, (m, t0, limit, _) in list(running.items()):
                if time.time() - t0 > limit:
                    os.kill(p, signal.SIGKILL)
                    os.waitpid(p, 0)
                    del running[p]
                    finish(m, {"status": "killed", "how": "timeout", "seconds": time.time() - t0,
                               "note": f"timed out after {limit:.0f} s"})
            time.sleep(0.05)
            continue
        m, t0, _, log = running.pop(pid)
        rc = os.waitstatus_to_exitcode(status)
        out = log.with_suffix(".json")
        fail = (json.loads(out.read_text()) if out.exists() else {}).get("failure") or {}
        r = {"seconds": time.time() - t0, "cpu": usage.ru_utime + usage.ru_stime, "rc": rc}
        if rc == 0:
            r["status"] = "survived"
        elif rc in (4, 5) or fail.get("test", "<harness>") == "<harness>":
            r.update(status="error", note=fail.get("message", f"pytest exit {rc}"))
        else:
            msg = fail["message"]
            how = "assert" if msg.startswith(("assert", "AssertionError", "Failed", "DID NOT")) else "error"
            r.update(status="killed", how=how, note=f"{fail['test']}: {msg}")
        finish(m, r)
    return results


# --- the report -----------------------------------------------------------------------------------
def report(mutants, results, meta) -> str:
    rows = [(m, results[m.id]) for m in mutants]
    equiv = [(m, r) for m, r in rows if m.key in EQUIVALENT]
    errors = [(m, r) for m, r in rows if r["status"] == "error" and m.key not in EQUIVALENT]
    scored = [(m, r) for m, r in rows if m.key not in EQUIVALENT and r["status"] != "error"]
    killed = [r for _, r in scored if r["status"] == "killed"]
    survivors = [(m, r) for m, r in scored if r["status"] == "survived"]
    how = Counter(r["how"] for r in killed)
    ran = [r for _, r in rows if "cpu" in r]

    def pct(k, n):
        return f"{k}/{n} ({100 * k / n:.0f}%)" if n else "0/0"

    def table(key, title):
        groups = defaultdict(lambda: [0, 0])
        for m, r in scored:
            groups[key(m)][0] += r["status"] == "killed"
            groups[key(m)][1] += 1
        return "\n".join([f"| {title} | killed / mutants |", "|---|---|"]
                         + [f"| {g} | {pct(*groups[g])} |" for g in sorted(groups)])

    def stats(values):
        return (f"median {statistics.median(values):.1f} s, mean {statistics.mean(values):.1f} s, "
                f"max {max(values):.1f} s") if values else "-"

    sample = f" (a sample of {len(rows)} of {meta['generated']})" if len(rows) < meta["generated"] else ""
    out = [
        "# Mutation sensitivity of the fast tests", "",
        f"`{meta['command']}`, {meta['date']}, commit {meta['commit']}"
        + (" with uncommitted changes in mapbench/ or tests/" if meta["dirty"] else "") + ".", "",
        f"**Score: {pct(len(killed), len(scored))} of the mutants{sample} are caught by the fast "
        "tests.**", "",
        f"- Killed by a failing assertion: {how['assert']}; by an exception: {how['error']}; "
        f"by the timeout: {how['timeout']}.",
        f"- Survivors: {len(survivors)}, of which "
        f"{sum('no fast test' in r.get('note', '') for _, r in survivors)} in code no fast test "
        "executes (not run).",
        f"- Not scored: {len(equiv)} known-equivalent (listed below, with the reason), "
        f"{len(errors)} harness errors. Not generated: "
        + (", ".join(f"{n} {k}" for k, n in meta["skipped"].items()) or "none") + ".",
        f"- Fast tests: {', '.join(meta['tests'])}: {meta['n_tests']} tests; clean run (with the "
        f"coverage recorder) {meta['clean_wall']:.0f} s wall, {meta['clean_cpu']:.0f} s cpu.",
        f"- Per mutant run, {meta['jobs']} at a time: wall {stats([r['seconds'] for r in ran])}; "
        f"cpu {stats([r['cpu'] for r in ran])}. Whole run: {meta['wall'] / 60:.1f} min.", "",
        "## By file", "", table(lambda m: m.file, "file"), "",
        "## By category", "", table(lambda m: m.category, "category"), "",
        "## Surviving mutants", "",
    ]
    if survivors:
        out += ["| where | unit | category | mutation | source line | note |", "|---|---|---|---|---|---|"]
        out += [f"| {m.file}:{m.line} | {m.unit} | {m.category} | `{_md(m.old)}` -> `{_md(m.new)}` "
                f"| `{_md(m.source_line)}` | {_md(r.get('note', ''))} |" for m, r in survivors]
    else:
        out.append("None.")
    if equiv:
        out += ["", "## Known-equivalent mutants (not scored)", ""]
        out += [f"- {m.file}:{m.line} `{m.old}` -> `{m.new}`: {EQUIVALENT[m.key]}" for m, _ in equiv]
    timeouts = [(m, r) for m, r in scored if r.get("how") == "timeout"]
    if timeouts:
        out += ["", "## Killed by the timeout (check these on a quiet machine)", ""]
        out += [f"- {m.file}:{m.line} `{m.old}` -> `{m.new}`: {r['note']}" for m, r in timeouts]
    if errors:
        out += ["", "## Harness errors (not scored)", ""]
        out += [f"- {m.file}:{m.line} `{m.old}` -> `{m.new}`: {r.get('note')}" for m, r in errors]
    return "\n".join(out) + "\n"


def _md(s: str) -> str:
    return s.replace("|", "\\|")


def _preload(tests):
    """Import what the test files import (not the test modules), so that children start warm."""
    for t in tests:
        for node in ast.parse((ROOT / t).read_text()).body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            for n in names:
                if not n.startswith("tests"):
                    try:
                        importlib.import_module(n)
                    except Exception:               # noqa: BLE001 - the clean run will say
                        pass


def _git(*args) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", nargs="+", help=f"files to mutate (default: {' '.join(TARGETS)})")
    p.add_argument("--tests", nargs="+", help=f"test files (default: {' '.join(FAST_TESTS)})")
    p.add_argument("--categories", nargs="+", help="only mutants of these categories")
    p.add_argument("--limit", type=int, help="only N mutants, spread evenly over the list")
    p.add_argument("--only", type=int, nargs="+", help="only the mutants with these ids (see --list)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--all-tests", action="store_true", help="every mutant runs every fast test")
    p.add_argument("--timeout-factor", type=float, default=3.0)
    p.add_argument("--list", action="store_true", help="print the mutants and exit")
    p.add_argument("--out", default="benchmarks/results/mutation.md")
    p.add_argument("--json", help="also write the per-mutant results here")
    args = p.parse_args(argv)
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    t_start = time.time()

    def expand(patterns):
        return sorted({str(Path(f).resolve().relative_to(ROOT)) for pat in patterns
                       for f in glob.glob(str(ROOT / pat))})

    files, tests = expand(args.files or TARGETS), expand(args.tests or FAST_TESTS)
    if not files or not tests:
        sys.exit(f"nothing to do: files {files}, tests {tests}")
    import torch
    torch.set_num_threads(1)
    _preload(tests)
    mutants, skipped = generate([ROOT / f for f in expand(TARGETS + files)])   # stable ids
    mutants = [m for m in mutants if m.file in files]
    skipped = sum((Counter({why: n}) for (f, why), n in skipped.items() if f in files), Counter())
    if args.categories:
        mutants = [m for m in mutants if m.category in args.categories]
    generated = len(mutants)
    if args.only:
        mutants = [m for m in mutants if m.id in args.only]
    if args.limit and args.limit < len(mutants):
        mutants = [mutants[i * len(mutants) // args.limit] for i in range(args.limit)]
    if not mutants:
        sys.exit("no mutants selected")
    if args.list:
        for m in mutants:
            print(f"{m.id:4d} {m.file}:{m.line} [{m.unit}] {m.category}: {m.old} -> {m.new}")
        print(f"{len(mutants)} mutants; {dict(Counter(m.category for m in mutants))}; "
              f"not generated: {dict(skipped)}")
        return

    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        print(f"clean run of {len(tests)} test files ...", flush=True)
        clean = clean_run(tests, mutants, Path(tmp))
        print(f"clean: {len(clean['durations'])} tests pass in {clean['wall']:.0f} s; "
              f"{len(mutants)} mutants, {args.jobs} at a time", flush=True)
        results = run_mutants(mutants, clean, args, Path(tmp))

    meta = {"command": " ".join(["python benchmarks/mutation.py", *(argv or sys.argv[1:])]),
            "date": time.strftime("%Y-%m-%d %H:%M"), "commit": _git("rev-parse", "--short", "HEAD"),
            "dirty": bool(_git("status", "--porcelain", "--", "mapbench", "tests")),
            "generated": generated, "skipped": dict(skipped), "tests": tests,
            "n_tests": len(clean["durations"]), "clean_wall": clean["wall"],
            "clean_cpu": clean["cpu"], "jobs": args.jobs, "wall": time.time() - t_start}
    text = report(mutants, results, meta)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps([{**m.row(), **results[m.id]} for m in mutants], indent=1))
    print(text.split("## By file")[0] + f"report: {args.out}")


if __name__ == "__main__":
    main()
