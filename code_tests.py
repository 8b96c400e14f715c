"""The released scorer's code-test formats and their harnesses, run in sandbox.py.

Report §7.2: a code response earns 1 only if its program passes every test of the
problem. The released scorer (SkyworkAI/Skywork-OR1,
verl/utils/reward_score/livecodebench/compute_score.py and lcb_runner's testing_util)
reads four formats from `reward_model.ground_truth`:

    stdin        {"inputs": ["1 2\\n"], "outputs": ["3\\n"]}           LiveCodeBench comparison
    call         {"fn_name": "f", "inputs": ["1\\n2"], "outputs": ["3"]} JSON lines per argument
                 (or TACO/APPS: {"fn_name": "f", "inputs": [[1, 2]], "outputs": [[3]]})
    assert       {"import_prefix", "test_code", "entry_point"}          check(entry_point)
    assert_case  {"assert_case": ["assert f(1, 2) == 3", ...]}         statements after the code

As the released loader does (or1_scripts/data_preprocess/download_and_filter_data_7b.py),
keys with empty values are dropped first (`released_tests`), so a row that carries
another format's keys as null or "" is read in the format its non-empty keys name.
Tests in no known format are an error naming what is missing, never a silent 0.

The trusted side decides. Call results come back as plain data and are compared here.
Assertion tests run in a checker process that the solution cannot reach; an object the
solution returns stays in the solution's process and the checker uses a stand-in that
forwards every use (attributes, str, len, iteration, +, isinstance, ...) and gets back
what the real object gives, as data. One use is decided on the checker's side instead:
comparing a solution's object with a test's own value (`f(x) == 3`) compares the
object's plain value (a namedtuple's tuple, a Counter's dict), never its __eq__, so an
always-equal object equals nothing. Stdin and call output may be as large as the
expected output allows (`_output_cap`); a flood is cut.

Where this differs from the released scorer, on purpose: the list-of-arguments call form
is read too (the released grade_call_based does `inputs.split("\n")` and scores it 0);
an `import_prefix` test file runs whole (released: line 0 joined to each later line, one
process per line, so a multi-line assertion is a SyntaxError there) and the assert_case
statements run in one checker (released: one process per statement; the reward is
all-pass either way); the comparison rule above (released: one process, the object's
own __eq__ decides). Code extraction is rewards.extract_code's.

Imports: sandbox.py. Exports: TestReport, check_syntax, released_tests, test_format, run_tests,
LCB_PRELUDE, ASSERT_CASE_PRELUDE.
"""

from __future__ import annotations

import ast
import json
import os
import re
from dataclasses import dataclass, field

from sandbox import SandboxConfig, run


@dataclass
class TestReport:
    """How one solution did on one problem's tests (the reward is all_passed)."""

    passed: int = 0
    total: int = 0
    reason: str = ""  # why the first failure failed ("wrong answer", "timeout", ...)
    details: list[str] = field(default_factory=list)

    @property
    def all_passed(self) -> bool:
        return self.total > 0 and self.passed == self.total


def check_syntax(code: str) -> str | None:
    """None if `code` parses as Python, else the error message."""
    try:
        ast.parse(code)
        return None
    except (SyntaxError, ValueError) as e:  # ValueError: null bytes
        return f"syntax error: {e}"


# --------------------------------------------------------------------------------------
# The released scorer's test formats (SkyworkAI/Skywork-OR1,
# verl/utils/reward_score/livecodebench/compute_score.py and lcb_runner's testing_util)
# --------------------------------------------------------------------------------------
#
# Routing follows the released compute_score, first match wins:
#   "test_code" (+ "import_prefix", "entry_point")  -> "assert": check(entry_point)
#   "inputs" + "outputs" with "fn_name"             -> "call": LiveCodeBench call-based
#   "inputs" + "outputs"                            -> "stdin": LiveCodeBench standard input
#   "assert_case": [statements]                     -> "assert_case"
# Anything else is an error naming the row (data.validate_row), never a silent 0.

# lcb_runner's import_string, prepended to stdin and call-based programs: every name of
# these modules, builtins restored last (math.pow must not shadow pow), recursion 50000.
_LCB_MODULES = ("string", "re", "datetime", "collections", "heapq", "bisect", "copy", "math", "random", "statistics",
                "itertools", "functools", "operator", "io", "sys", "json")
LCB_PRELUDE = ("".join(f"from {m} import *\n" for m in _LCB_MODULES + ("builtins", "typing"))
               + "".join(f"import {m}\n" for m in _LCB_MODULES) + "sys.setrecursionlimit(50000)\n")
# compute_score's IMPORT_PROMPT, prepended to assert_case programs. ("import_prefix"
# programs get only their own prefix, as released.)
ASSERT_CASE_PRELUDE = ("from typing import *\n"
                       + "".join(f"from {m} import *\n" for m in ("functools", "collections", "itertools", "heapq",
                                                                  "bisect", "string", "operator", "math"))
                       + "import math\nimport datetime\ninf = float('inf')\n")


def released_tests(tests):
    """The tests with every empty key dropped, as the released loader does before training
    (download_and_filter_data_7b.py keeps a key only `if item[key]`): a row that carries
    {"import_prefix": null, "inputs": [...], ...} is a stdin row, not a broken assert row.

    >>> released_tests({"fn_name": None, "import_prefix": "", "inputs": ["1"], "outputs": ["1"]})
    {'inputs': ['1'], 'outputs': ['1']}
    """
    return {k: v for k, v in tests.items() if v} if isinstance(tests, dict) else tests


def test_format(tests) -> str:
    """The format of one problem's tests (after released_tests): "assert", "call", "stdin"
    or "assert_case". Raises ValueError naming what is missing for anything else."""
    tests = released_tests(tests)
    if not isinstance(tests, dict):
        raise ValueError(f"code tests must be a JSON object, got {type(tests).__name__}")
    # The released compute_score's order: assertion file, then inputs/outputs, then
    # assert_case; its fallback (grade as math) would score any unknown code row 0.
    if "test_code" in tests or "import_prefix" in tests:
        missing = [k for k in ("test_code", "entry_point") if not isinstance(tests.get(k), str)]
        if missing:
            raise ValueError(f"assertion tests need string fields {missing}")
        return "assert"
    if "inputs" in tests:  # parallel lists of inputs and expected outputs
        ins, outs = tests.get("inputs"), tests.get("outputs")
        if not isinstance(ins, list) or not isinstance(outs, list) or len(ins) != len(outs) or not ins:
            raise ValueError("'inputs' and 'outputs' must be non-empty lists of equal length")
        return "call" if tests.get("fn_name") else "stdin"
    if "assert_case" in tests:  # a list of statements, each checked after the solution
        if not isinstance(tests["assert_case"], list) or not all(isinstance(a, str) for a in tests["assert_case"]):
            raise ValueError("'assert_case' must be a list of statements (strings)")
        return "assert_case"
    if "question_id" in tests:
        raise ValueError("a bare LiveCodeBench 'question_id' (the released evaluation-only format) carries no tests; "
                         "load the benchmark with eval.py --benchmarks livecodebench")
    raise ValueError(f"no known test format in keys {sorted(tests)} (want test_code/entry_point, inputs/outputs "
                     f"[+fn_name], or assert_case)")


def _same_stdout(got: str, want: str) -> bool:
    """lcb_runner's comparison: strip both, compare line by line; a line matches when it
    is equal as a string or when its whitespace-separated tokens are equal as Decimals
    ("0.50" == "0.5"; no tolerance: "0.3333" != "0.33333")."""
    # Decimal, not float: "0.1" and "0.10" are equal, and no rounding error creeps in.
    from decimal import Decimal, InvalidOperation

    # Whole output stripped, then line by line; the line count must match.
    g, w = got.strip().split("\n"), want.strip().split("\n")
    if len(g) != len(w):
        return False
    for a, b in zip(g, w):
        a, b = a.strip(), b.strip()
        if a == b:
            continue
        # Not equal as text: equal as numbers, token by token? (A word token fails.)
        try:
            if [Decimal(x) for x in a.split()] != [Decimal(y) for y in b.split()]:
                return False
        except InvalidOperation:
            return False
    return True


def _compact(template: str) -> str:
    """A harness template without its comment-only and blank lines: every program
    compiles its harness afresh (about 1 ms less each); the comments are for the reader."""
    return "\n".join(line for line in template.split("\n") if line.strip() and not line.lstrip().startswith("#"))


# Values cross between processes as tagged JSON (source shared by all sides): plain
# data only -- numbers (inf and nan included), strings, bools, None, lists, and tagged
# tuples, dicts, sets, bytes, complex. The trusted side rebuilds them with json.loads,
# so no object of the solution's (an always-equal one, say) ever reaches a comparison.
# The assertion harness passes `obj` hooks: there, anything that is not *exactly* one of
# these types (a class instance, a Counter, a namedtuple) crosses as a handle instead.
_CODEC = _compact(r"""
import json as _json
_PLAIN = {type(None), bool, int, float, str, list, tuple, dict, set, frozenset, bytes, complex}
# Stdlib value types that the assertion checker rebuilds itself, from their constructor
# arguments, when it compares one with a test's value (never the solution's __eq__).
_STD = {"collections.deque", "collections.Counter", "collections.OrderedDict", "collections.defaultdict",
        "fractions.Fraction", "decimal.Decimal", "datetime.date", "datetime.datetime", "datetime.time",
        "datetime.timedelta"}
# Encode: plain data as JSON; a one-key object tags what JSON cannot say (tuple, dict
# with any keys, set, bytes, complex). Anything else: obj(x) (a handle) if given, else
# TypeError (not data; a subclass of a plain type counts as its plain value then).
def _enc(x, obj=None):
    if obj is not None and type(x) not in _PLAIN:
        return obj(x)
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, list):
        return [_enc(v, obj) for v in x]
    if isinstance(x, tuple):
        return {"t": [_enc(v, obj) for v in x]}
    if isinstance(x, dict):
        return {"d": [[_enc(k, obj), _enc(v, obj)] for k, v in x.items()]}
    if isinstance(x, (set, frozenset)):
        return {"s" if isinstance(x, set) else "fs": [_enc(v, obj) for v in x]}
    if isinstance(x, bytes):
        return {"b": x.hex()}
    if isinstance(x, complex):
        return {"c": [x.real, x.imag]}
    raise TypeError("not plain data: " + type(x).__name__)
# Decode: builds only lists, tuples, dicts, sets, bytes, complex and JSON scalars; any
# other tag goes to obj(tag, value) if given (a handle), else ValueError.
def _dec(x, obj=None):
    if isinstance(x, list):
        return [_dec(v, obj) for v in x]
    if not isinstance(x, dict):
        return x
    (tag, v), = x.items()
    if tag == "t":
        return tuple(_dec(i, obj) for i in v)
    if tag == "d":
        return {_dec(k, obj): _dec(i, obj) for k, i in v}
    if tag in ("s", "fs"):
        return (set if tag == "s" else frozenset)(_dec(i, obj) for i in v)
    if tag == "b":
        return bytes.fromhex(v)
    if tag == "c":
        return complex(*v)
    if obj is not None:
        return obj(tag, v)
    raise ValueError(tag)
""")
# The trusted side decodes with the very source the children encode with: one codec.
_ns: dict = {}
exec(_CODEC, _ns)  # the trusted side's decoder: the same source the children run
_decode = _ns["_dec"]


def _fill(template: str, **parts: str) -> str:
    """`template` with each @@name@@ replaced by parts[name], in one pass: text put in
    (the solution's code) is never scanned for placeholders again."""
    return re.sub(r"@@(\w+)@@", lambda m: parts[m.group(1)], template)


# Call-based tests (LiveCodeBench): the solution runs, `Solution().<fn>` (or, for a bare
# function, the function itself -- released compute_score wraps it into a Solution
# method, which calls the same code) is called on each input, and the raw results are
# printed as one tagged-JSON line. The expected outputs never enter this process.
_CALL_HARNESS = _compact("""
@@code@@

@@codec@@
import sys as _s
# The method of a Solution instance, or a bare top-level function of that name.
_target = None
if "Solution" in globals():
    _target = getattr(globals()["Solution"](), @@fn@@, None)
if _target is None:
    _target = globals().get(@@fn@@)
# Every input's arguments, in order; an exception fails the run (exit code != 0).
_res = [_target(*_args) for _args in _dec(_json.loads(@@inputs@@))]
_s.stdout.write("\\n" + _json.dumps(_enc(_res)) + "\\n")
_s.stdout.flush()
import os as _o
_o._exit(0)  # now: no atexit handler or lingering thread of the program may print after the results
""")

# Assertion tests (formats "assert" and "assert_case") run as two processes. The
# untrusted solution serves requests; the checker holds the test code, in which every
# top-level name of the solution is a stand-in (a function, or a class) that forwards.
# A request is [kind, target, name, args, kwargs], target a handle or None:
#   call  the top-level function `name`, target's method `name`, or target itself
#   get   target.name: plain data, a handle, or "fn" for a method (called by name later)
#   set   target.name = args[0]
#   op    a built-in operation (str, len, +, <, iter, isinstance, ...) on args
# The answer is ["ok", value, args after the call] (a test may check an in-place
# change), ["fn"], or ["raise", [exception class name, nearest built-in base, args]].
# Objects that are not plain data stay in the solution's process; the checker gets a
# handle (their index there) and makes a stand-in of it, whose every use forwards and
# comes back as data or as further handles. What the solution can send is therefore
# only data, handles and built-in exceptions: the verdict stays the checker's (its
# marker line, with a per-run secret the solution never sees).
_SOLUTION_SERVER = _compact("""
@@prelude@@
@@prefix@@
@@codec@@
import sys as _sys
# Ints of any size cross as JSON: lift the 4300-digit str guard (Python >= 3.11; `int`
# is a no-op stand-in before), a DoS guard that a time-limited run does not need.
getattr(_sys, "set_int_max_str_digits", int)(0)
_before = dict(globals())
@@code@@

# Names the solution defined or redefined (its `add` replaces the prelude's operator.add),
# taken before the harness defines any function of its own.
_new = sorted((n, v) for n, v in list(globals().items()) if _before.get(n) is not v and not n.startswith("__") and callable(v))
import builtins as _bi, math as _m, operator as _op, os as _o, types as _ty
# One handle per object (by identity: the same object comes back as the same handle).
_objs, _ids = [], {}
def _keep(x):
    i = _ids.get(_bi.id(x))
    if i is None:
        i = _ids[_bi.id(x)] = _bi.len(_objs)
        _objs.append(x)
    return {"h": i}
# What the checker sends that is ours: a handle, a top-level function, a bound method.
def _in(tag, v):
    if tag == "h":
        return _objs[v]
    if tag == "g":
        return globals()[v]
    if tag == "m":
        return getattr(_dec(v[0], _in), v[1])
    raise ValueError(tag)
def _out(x):
    return _enc(x, _keep)
# An exception crosses as names and plain args, never as the object.
def _exc(e):
    base = _bi.next(c.__name__ for c in type(e).__mro__ if getattr(_bi, c.__name__, None) is c)
    try:
        args = _enc(list(e.args))
    except BaseException:
        args = []
    return [type(e).__name__, base, args]
# "value": what the checker compares with a test's value itself -- the plain value (a
# namedtuple's tuple, a Counter's dict), or a stdlib type's constructor arguments.
def _value(x):
    k = type(x).__module__ + "." + type(x).__qualname__
    if k in _STD:
        r = x.__reduce__()
        return [k, _dec(_enc(list(r[1]) if len(r) == 2 else [dict(x) if isinstance(x, dict) else list(x)]))]
    return ["", _dec(_enc(x))]
# The built-in operations the checker's stand-ins forward, by name.
_OPS = {n: getattr(_op, n, None) or getattr(_op, n + "_", None) or getattr(_bi, n) for n in @@binary@@}
_OPS.update({"i" + n: getattr(_op, "i" + n, None) for n in @@binary@@})
# (Builtins through _bi: a solution's own top-level `format` or `hash` must not answer.)
_OPS.update({n: getattr(_op, n) for n in ("eq", "ne", "lt", "le", "gt", "ge", "neg", "pos", "invert", "index",
                                          "contains", "getitem", "setitem", "delitem")})
_OPS.update({n: getattr(_bi, n) for n in ("abs", "int", "float", "complex", "round", "len", "bool", "str", "repr",
                                          "hash", "format", "iter", "next", "reversed", "isinstance")})
_OPS.update(floor=_m.floor, ceil=_m.ceil, trunc=_m.trunc, value=_value,
            type=lambda x: [type(x).__module__, type(x).__qualname__])
_FN = (_ty.FunctionType, _ty.MethodType, _ty.BuiltinFunctionType, _ty.MethodWrapperType,
       _ty.MethodDescriptorType, _ty.WrapperDescriptorType, _ty.ClassMethodDescriptorType)
# The hello: those names. A class also gets a handle, its base classes among them and its
# nearest built-in base (the checker's stand-in class derives from these).
_hello = []
for _n, _v in _new:
    if isinstance(_v, type):
        _sb = [b.__name__ for b in _v.__bases__ if dict(_new).get(b.__name__) is b]
        _bb = _bi.next((b.__name__ for b in _v.__mro__[1:-1] if b.__module__ == "builtins"), None)
        _hello.append([_n, _keep(_v)["h"], _sb, _bb])
    else:
        _hello.append([_n, None, None, None])
# Two pipes to the checker: requests in, answers out.
_rq, _rs = _o.fdopen(__REQ__, "r"), _o.fdopen(__RESP__, "w")
_rs.write(_json.dumps(_hello) + "\\n")
_rs.flush()
# Serve until the checker closes its end. Any failure, the harness's too, is an answer.
for _line in _rq:
    try:
        _k, _t, _n, _a, _kw = _dec(_json.loads(_line), _in)
        _after = None
        if _k == "call":  # by name (top level), a method of a held object, or the object itself
            _r = (globals()[_n] if _t is None else getattr(_t, _n) if _n else _t)(*_a, **_kw)
            _after = _out(_a)
        elif _k == "get":
            _r = getattr(_t, _n)
        elif _k == "set":
            _r = setattr(_t, _n, _a[0])
        else:
            _r = _OPS[_n](*_a)
        # A method is answered "fn" and called by name later: no handle kept per access.
        _ans = ["fn", None, None] if _k == "get" and type(_r) in _FN else ["ok", _out(_r), _after]
        _ans = _json.dumps(_ans)
    except BaseException as _e:
        _ans = _json.dumps(["raise", _exc(_e), None])
    _rs.write(_ans + "\\n")
    _rs.flush()
""")

_ASSERT_CHECKER = _compact("""
@@codec@@
import builtins as _b, operator as _op, os as _o, sys as _sys
getattr(_sys, "set_int_max_str_digits", int)(0)  # as in the solution's process: ints of any size cross
_rq, _rs = _o.fdopen(__REQ__, "w"), _o.fdopen(__RESP__, "r")
_remotes, _byh, _byname = {}, {}, {}  # handle -> its one stand-in; class handle / name -> stand-in class


# What of ours is sent as a reference (a handle, a function's name, a method); other
# objects of the tests' (a Counter they built) go as their plain value, as data.
def _ref(x):
    t = type(x)
    if t is _Remote or t is _RemoteClass:
        return {"h": x._h}
    if t is _Fn:
        return {"g": x.__name__}
    if t is _Method:
        return {"m": [_ref(x.t), x.n]}
    return _enc(x)


# A handle from the solution -> its stand-in, one per object (so `is` works as there).
def _in(tag, v):
    if tag != "h":
        raise ValueError(tag)
    if v in _byh:
        return _byh[v]
    if v not in _remotes:
        _remotes[v] = _Remote(v)
    return _remotes[v]


# One round trip: the request goes as data; data, stand-ins or an exception come back.
def _ask(kind, target, name, args=(), kwargs=None, plain=False):
    _rq.write(_json.dumps(_enc([kind, target, name, list(args), kwargs or {}], _ref)) + "\\n")
    _rq.flush()
    line = _rs.readline()
    if not line:
        raise RuntimeError("the solution exited")
    tag, val, after = _json.loads(line)
    if tag == "raise":
        _raise(*val)
    if tag == "fn":
        return _Method(target, name)
    # The solution may have changed an argument in place (nums.sort(), "modify in place"
    # problems): the checker's own list / dict / set takes its new contents, as data.
    for old, new in zip(args, _dec(after, _in) if after is not None else ()):
        if type(old) is _Remote:
            continue
        if isinstance(old, list) and isinstance(new, list):
            old[:] = new
        elif isinstance(old, (dict, set)) and type(new) is type(old):
            old.clear()
            old.update(new)
    return _dec(val) if plain else _dec(val, _in)


# Re-raise as the solution's own exception class (its stand-in) or its nearest built-in
# base, with its args, so `except ValueError` and `except MyError` work. Never as
# SystemExit or KeyboardInterrupt: those would end the checker with the solution's code.
def _raise(name, base, args):
    cls = _byname.get(name)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        cls = getattr(_b, base, None)
        if not (isinstance(cls, type) and issubclass(cls, Exception)):
            cls = RuntimeError
    try:
        e = type.__call__(cls, *_dec(args))
    except Exception:
        e = RuntimeError(name)
    raise e


# The comparison rule. Two of the solution's objects: its own ==, < decide, as in
# Python (the test compares the solution's values with each other). A solution object
# and a test's value: the object's plain value is fetched and compared *here*, by the
# test's types -- its own __eq__ is never asked, so an always-equal object equals
# nothing; an object with no plain value equals no test value and has no order with it.
def _compare(a, b, name):
    if type(b) is _Remote:
        return _ask("op", None, name, (a, b))
    try:
        kind, v = _ask("op", None, "value", (a,), plain=True)
        if kind:  # a stdlib value type: built here, by the stdlib's own class
            mod, cls = kind.split(".")
            if kind not in _STD:
                return NotImplemented
            cls = getattr(__import__(mod), cls)
            v = cls(None, *v) if cls.__name__ == "defaultdict" else cls(*v)
    except Exception:  # no plain value (TypeError there), or none that can be built
        return NotImplemented
    return getattr(_op, name)(v, b)


# The type that isinstance() sees for a stand-in (when the class is not a stand-in
# class, which asks the solution itself): the solution's class's stand-in, or a built-in
# or stdlib class (a Counter is a dict), else only the stand-in's own type.
def _class_of(s):
    mod, name = _ask("op", None, "type", (s,))
    if mod == "__main__":
        return _byname.get(name, _Remote)
    if mod == "builtins" or mod + "." + name in _STD:
        t = getattr(__import__(mod), name, None)
        if isinstance(t, type):
            return t
    return _Remote


class _Remote:
    # An object that lives in the solution's process. Every use forwards there and
    # returns what the real object gives: attributes (data, or another stand-in),
    # calls, str/repr/format, hash, len, bool, iteration, indexing, `in`, arithmetic.
    __slots__ = ("_h",)
    def __init__(self, handle):
        object.__setattr__(self, "_h", handle)
    def __getattr__(self, name):
        return _ask("get", self, name)
    def __setattr__(self, name, value):
        _ask("set", self, name, (value,))
    def __call__(self, *args, **kwargs):
        return _ask("call", self, "", args, kwargs)
    __class__ = property(_class_of)
    def __hash__(self):
        return _ask("op", None, "hash", (self,))


# Comparisons by the rule above; every other operation forwards: the one-operand ones,
# those with more operands (obj[k] = v, format(obj, spec)), and every binary operator
# with its reflected (1 + obj) and in-place (obj += 1) forms -- the solution applies the
# operator to the real objects.
for _n in ("eq", "ne", "lt", "le", "gt", "ge"):
    setattr(_Remote, "__%s__" % _n, lambda s, o, _n=_n: _compare(s, o, _n))
for _n in ("round", "format", "contains", "getitem", "setitem", "delitem"):
    setattr(_Remote, "__%s__" % _n, lambda s, *a, _n=_n: _ask("op", None, _n, (s,) + a))
for _n in ("len", "bool", "str", "repr", "iter", "next", "reversed", "neg", "pos", "abs", "invert", "int", "float",
           "complex", "index", "floor", "ceil", "trunc"):
    setattr(_Remote, "__%s__" % _n, lambda s, _n=_n: _ask("op", None, _n, (s,)))
for _n in @@binary@@:
    setattr(_Remote, "__%s__" % _n, lambda s, o, _n=_n: _ask("op", None, _n, (s, o)))
    setattr(_Remote, "__r%s__" % _n, lambda s, o, _n=_n: _ask("op", None, _n, (o, s)))
    setattr(_Remote, "__i%s__" % _n, lambda s, o, _n=_n: _ask("op", None, "i" + _n, (s, o)))


class _RemoteClass(type):
    # The metaclass of a stand-in for one of the solution's classes: calling it builds the
    # object there; class attributes and static methods forward; isinstance(obj, Cls)
    # asks the solution about its own object.
    def __call__(cls, *args, **kwargs):
        return _ask("call", cls, "", args, kwargs)
    def __getattr__(cls, name):
        return _ask("get", cls, name)
    def __instancecheck__(cls, obj):
        if type(obj) is _Remote:
            return _ask("op", None, "isinstance", (obj, cls))
        return type.__instancecheck__(cls, obj)


class _Fn:
    # A top-level function of the solution, by name (HumanEval/38's test calls the
    # encode_cyclic helper beside the decode_cyclic under test).
    def __init__(self, name):
        self.__name__ = name
    def __call__(self, *args, **kwargs):
        return _ask("call", None, self.__name__, args, kwargs)


class _Method:
    # `obj.method` before the call: called there by name, on the object (one round trip).
    __slots__ = ("t", "n")
    def __init__(self, target, name):
        self.t, self.n = target, name
    def __call__(self, *args, **kwargs):
        return _ask("call", self.t, self.n, args, kwargs)


# The stand-in class for the solution's class `name`: it derives from the stand-ins of
# its bases and from its nearest built-in base (an exception class stays an exception:
# `except MyError` catches what the solution raised), with the class's handle.
def _stand_in(name, classes):
    if name not in _byname:
        h, sol_bases, builtin = classes[name]
        bases = tuple(_stand_in(b, classes) for b in sol_bases if b in classes)
        b = getattr(_b, builtin or "", None)
        if isinstance(b, type) and not any(issubclass(x, b) for x in bases):
            bases += (b,)
        try:
            cls = _RemoteClass(name, bases, {"_h": h})
        except TypeError:  # bases that cannot be combined: a plain stand-in
            cls = _RemoteClass(name, (), {"_h": h})
        _byname[name] = _byh[h] = cls
    return _byname[name]


# The tests run in a namespace of their own (prelude, prefix, the solution's names as
# stand-ins): a test that rebinds `str` or `add` at top level cannot break this harness.
_ns = {"__name__": "__main__"}
exec(@@setup@@, _ns)
_hello = _rs.readline()
if not _hello:  # the solution ended before defining its names (os._exit at import time)
    raise SystemExit("the solution exited")
_hello = _json.loads(_hello)
_classes = {e[0]: e[1:] for e in _hello if e[1] is not None}
for _e in _hello:
    # Never a builtin -- a solution's own `len` must not answer the tests' len() -- except
    # the entry point under test itself (check(max) must test the solution's max).
    if not hasattr(_b, _e[0]) or _e[0] == @@entry@@:
        _ns[_e[0]] = _stand_in(_e[0], _classes) if _e[1] is not None else _Fn(_e[0])
exec(compile(@@tests@@, "<tests>", "exec"), _ns)
# Reached only if every assertion held: the marker, with this run's secret, is the verdict.
print("\\n" + @@marker@@)
""")
# The binary operators the stand-ins forward (operator module names, "and_"/"or_" for and/or).
_BINARY = repr(("add", "sub", "mul", "matmul", "truediv", "floordiv", "mod", "pow", "lshift", "rshift", "and",
                "xor", "or", "divmod"))


def _output_cap(cfg: SandboxConfig, expected: str) -> int:
    """How much output one run may print: the sandbox's fixed cap (a flood is cut there)
    plus `expected_output_factor` bytes per byte of the expected output, so a correct
    answer of any size fits with room for a different but equal formatting ("0.50" for
    "0.5", padded columns). The expected output is already in the trainer's memory, so
    this bounds what a run can add to it by a multiple of what the row itself holds."""
    return cfg.max_output_bytes + cfg.expected_output_factor * len(expected.encode("utf-8", "surrogatepass"))


def _hoist_future(code: str) -> tuple[str, str]:
    """(`from __future__` lines, the rest): they must stay first in a program we prepend to."""
    # ("from __future__ import annotations" after a prelude would be a SyntaxError.)
    lines = code.split("\n")
    fut = [l for l in lines if l.startswith("from __future__")]
    return "\n".join(fut), "\n".join(l for l in lines if not l.startswith("from __future__"))


def run_tests(code: str, tests: dict, cfg: SandboxConfig | None = None) -> TestReport:
    """Run `code` against one problem's tests (formats above). Never raises on untrusted
    behaviour; raises ValueError for tests in no known format."""
    cfg = cfg or SandboxConfig()
    tests = released_tests(tests)  # empty keys dropped, as the released loader does
    kind = test_format(tests)
    # §7.2: a syntax check first -- a program that does not parse never runs.
    err = check_syntax(code)
    if err:
        return TestReport(0, 1, err)
    # `from __future__` lines must open the program we build around the solution.
    future, code = _hoist_future(code)
    codec = _CODEC
    if kind in ("assert", "assert_case"):
        # Two programs joined by pipes (sandbox.run with server=): the solution serves,
        # the checker asks; each under its own uid.
        if kind == "assert":  # check(entry_point), the test file's own check() (HumanEval, KodCode)
            prelude, prefix = "", tests.get("import_prefix", "")
            body = f"{tests['test_code']}\n\ncheck({tests['entry_point']})"
        else:  # the statements in order; each one runs in the checker with the solution's names
            prelude, prefix = ASSERT_CASE_PRELUDE, ""
            body = "\n".join(tests["assert_case"])
        server = future + "\n" + _fill(_SOLUTION_SERVER, prelude=prelude, prefix=prefix, code=code, codec=codec,
                                        binary=_BINARY)
        # The marker carries a secret of this run, known only to the checker's script (a
        # file the solution's uid cannot read): no text the solution makes the checker
        # print (a returned string a test prints) can end with it.
        marker = "__ASSERTIONS_DONE__" + os.urandom(8).hex()
        checker = _fill(_ASSERT_CHECKER, codec=codec, setup=repr(prelude + prefix), tests=repr(body), binary=_BINARY,
                        entry=repr(tests.get("entry_point", "")), marker=repr(marker))
        out, status, rc = run(checker, "", cfg, min(cfg.timeout_s, cfg.total_timeout_s), server=server)
        # Passed only if the checker finished cleanly AND printed its marker last: an exit
        # code of 0 alone proves nothing (os._exit(0) gives one).
        ok = not status and rc == 0 and out.rstrip().endswith(marker)
        return TestReport(int(ok), 1, "" if ok else (status or "assertion failed"))
    # stdin and call-based programs get lcb_runner's prelude (its imports, recursion limit).
    inputs, outputs = tests["inputs"], tests["outputs"]
    program = future + "\n" + LCB_PRELUDE + code
    if kind == "call":
        # LiveCodeBench's call-based format (released): each input is a string of
        # newline-separated JSON arguments, each output a JSON string. A list of
        # arguments and a plain expected value (this project's toy rows) work too.
        # Decoded here, on the trusted side; the harness receives plain argument lists.
        args = [[json.loads(a) for a in i.split("\n") if a.strip()] if isinstance(i, str) else i for i in inputs]
        # Expected values stay here: only the arguments go into the child's program.
        want = [json.loads(o) if isinstance(o, str) else o for o in outputs]
        script = _fill(_CALL_HARNESS, code=program, codec=codec, fn=repr(tests["fn_name"]),
                       inputs=repr(json.dumps(args)))
        # One process for all inputs; the time limit grows with their number, and the
        # output cap with the size of the expected results (the line they come back on).
        out, status, rc = run(script, "", cfg, min(cfg.timeout_s * len(inputs), cfg.total_timeout_s),
                              max_output=_output_cap(cfg, json.dumps(want)))
        if status or rc != 0:
            return TestReport(0, len(inputs), status or f"runtime error (exit {rc})")
        # The results are the harness's last line; anything the program printed is above.
        try:
            got = _decode(json.loads(out.strip().split("\n")[-1]))
        except (ValueError, IndexError, TypeError):
            return TestReport(0, len(inputs), "no results")
        # As released: a returned tuple counts as a list; then exact equality. The argument-
        # list form is APPS/TACO's own functional format (their `input_output` field) and
        # this project's toy rows'; whether any published Skywork row keeps it was not
        # checked (no data access here), and the released scorer would score it 0. Its
        # expected outputs may come wrapped in a one-element list, which APPS's checker
        # unwraps: accept w[0] too (one element only here).
        got = [list(g) if isinstance(g, tuple) else g for g in got] if isinstance(got, list) else []
        apps = not isinstance(inputs[0], str)
        same = lambda g, w: g == w or (apps and isinstance(w, list) and len(w) == 1 and g == w[0])  # noqa: E731
        passed = sum(1 for g, w in zip(got, want) if same(g, w)) if len(got) == len(want) else 0
        return TestReport(passed, len(inputs), "" if passed == len(inputs) else "wrong answer")
    # stdin/stdout tests: one fresh process per test, stop at the first failure (binary
    # reward: one failure decides), and never exceed the total time budget.
    report = TestReport(0, len(inputs))
    # Each test gets at most timeout_s, and all of them together total_timeout_s.
    budget = cfg.total_timeout_s  # seconds left for this solution, all tests together
    for stdin, want in zip(inputs, outputs):
        stdin = "\n".join(stdin) if isinstance(stdin, list) else str(stdin)  # released: a list is joined by lines
        want = str(want)
        out, status, rc = run(program, stdin, cfg, min(cfg.timeout_s, max(budget, 0.1)), max_output=_output_cap(cfg, want))
        budget -= cfg.timeout_s
        if status or rc != 0 or not _same_stdout(out, want):
            report.reason = status or (f"runtime error (exit {rc})" if rc != 0 else "wrong answer")
            return report
        report.passed += 1
    return report
