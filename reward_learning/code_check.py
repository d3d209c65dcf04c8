"""Static check of LLM-written reward code, and the child-process side of the sandbox that runs it.

`check_code` parses a program with `ast` and accepts only an allow-list: a small set of syntax (no classes, decorators,
try/with/raise, yield, global), a small set of builtins, allow-listed names of numpy and math, allow-listed attributes
of values (array and container methods), and no name or attribute that starts with an underscore. Imports are limited
to `import numpy [as x]`, `import math [as x]`, `from numpy|numpy.linalg|math import <allowed name>` and `typing`
(annotations are stripped, never evaluated); they are removed from the program and the names are bound up front, so
the sandbox never needs `__import__`. `np` and `math` are bound even without an import. The contract of the checked
function is in `reward_learning.sandbox`.

The rest of the module is the worker: `serve` runs in a child process started by `reward_learning.sandbox`, re-checks
the program, applies resource limits and answers evaluation requests. The message framing (`read_message`,
`write_message`) is shared by both sides; it carries JSON headers and raw arrays, never pickles, so a child that
misbehaves cannot make the parent execute anything. This module imports only the standard library and numpy: the child
loads it by file path, so it starts without torch or the rest of the package.
"""

from __future__ import annotations

import ast
import builtins
import json
import math
import os
import resource
import select
import struct
import sys
import time
import types
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

ENTRY_POINT = "compute_dense_reward"
POSITIONAL = ("obs", "action", "next_obs")
CODE_FILENAME = "<reward code>"
MAX_SOURCE_CHARS = 100_000
MAX_DEPTH = 100

ALLOWED_BUILTINS = frozenset({
    "abs", "all", "any", "bool", "dict", "divmod", "enumerate", "filter", "float", "int", "isinstance", "len", "list",
    "map", "max", "min", "pow", "range", "reversed", "round", "set", "sorted", "str", "sum", "tuple", "zip"})

NUMPY_NAMES = frozenset("""
abs absolute add all allclose any arange arccos arccosh arcsin arcsinh arctan arctan2 arctanh argmax argmin argsort
array asarray atleast_1d atleast_2d average bool_ broadcast_to cbrt ceil clip concatenate copy copysign cos cosh
count_nonzero cross cumprod cumsum deg2rad degrees diag diff divide dot e einsum equal exp exp2 expand_dims expm1 eye
float32 float64 floor floor_divide fmax fmin fmod full full_like greater greater_equal heaviside hstack hypot inf inner
int32 int64 interp isclose isfinite isinf isnan less less_equal linalg linspace log log10 log1p log2 logical_and
logical_not logical_or logical_xor matmul max maximum mean median min minimum mod multiply nan nan_to_num negative
 newaxis nonzero not_equal ones ones_like outer percentile pi power prod quantile rad2deg radians reciprocal
remainder repeat reshape round sign sin sinh sort sqrt square squeeze stack std subtract sum take tan tanh tensordot
tile trace transpose true_divide var vstack where zeros zeros_like""".split())
LINALG_NAMES = frozenset({"det", "inv", "norm", "pinv", "solve"})
MATH_NAMES = frozenset(name for name in dir(math) if not name.startswith("_"))  # pure arithmetic, no I/O
MODULE_NAMES = {"numpy": NUMPY_NAMES, "numpy.linalg": LINALG_NAMES, "math": MATH_NAMES}
TYPING_MODULES = frozenset({"typing", "__future__"})

VALUE_ATTRIBUTES = frozenset({
    # arrays
    "T", "all", "any", "argmax", "argmin", "argsort", "astype", "clip", "copy", "cumprod", "cumsum", "diagonal",
    "dot", "flatten", "imag", "item", "max", "mean", "min", "ndim", "nonzero", "prod", "ravel", "real", "repeat",
    "reshape", "round", "shape", "size", "sort", "squeeze", "std", "sum", "swapaxes", "take", "tolist", "trace",
    "transpose", "var",
    # lists and dicts
    "append", "count", "extend", "get", "index", "insert", "items", "keys", "pop", "update", "values"})

ALLOWED_NODES = (
    ast.Module, ast.FunctionDef, ast.arguments, ast.arg, ast.Return, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.For,
    ast.While, ast.If, ast.Pass, ast.Break, ast.Continue, ast.Expr, ast.Assert, ast.Import, ast.ImportFrom, ast.alias,
    ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Lambda, ast.IfExp, ast.Dict, ast.Set, ast.ListComp, ast.SetComp,
    ast.DictComp, ast.GeneratorExp, ast.comprehension, ast.Compare, ast.Call, ast.keyword, ast.Constant, ast.Attribute,
    ast.Subscript, ast.Slice, ast.Starred, ast.Name, ast.List, ast.Tuple, ast.JoinedStr, ast.FormattedValue,
    ast.NamedExpr, ast.expr_context, ast.boolop, ast.operator, ast.unaryop, ast.cmpop)
TOP_LEVEL = (ast.FunctionDef, ast.Assign, ast.AnnAssign, ast.Import, ast.ImportFrom, ast.Pass, ast.Expr)
NODE_WORDS = {"ClassDef": "class", "Try": "try", "TryStar": "try", "ExceptHandler": "try", "With": "with",
              "withitem": "with", "Raise": "raise", "Yield": "yield", "YieldFrom": "yield from", "Await": "await",
              "Global": "global", "Nonlocal": "nonlocal", "Delete": "del", "AsyncFunctionDef": "async def",
              "Match": "match", "match_case": "match"}
PYTHON_BUILTINS = frozenset(dir(builtins))


class RewardCodeError(ValueError):
    """Reward code that was rejected or failed: `reason` says why, `line` where (None when it is not one line)."""

    def __init__(self, reason: str, line: int | None = None, kind: str = "static") -> None:
        self.reason, self.line, self.kind = reason, line, kind
        super().__init__(f"line {line}: {reason}" if line else reason)


@dataclass(frozen=True)
class CheckedCode:
    """A program that passed `check_code`: its stripped tree, the names its imports bind, and the entry point's
    extra keyword parameters (`required` have no default; `takes_any` when it has `**named`)."""

    source: str
    tree: ast.Module
    bindings: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    keywords: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    takes_any: bool = False


def check_code(source: str) -> CheckedCode:
    """Parse and check reward code; raises `RewardCodeError` ("line 3: import of 'os' is not allowed")."""
    if not isinstance(source, str):
        raise RewardCodeError(f"reward code must be a string, got {type(source).__name__}")
    if len(source) > MAX_SOURCE_CHARS:
        raise RewardCodeError(f"reward code is {len(source)} characters long; the limit is {MAX_SOURCE_CHARS}")
    try:
        tree = ast.parse(source, CODE_FILENAME)
    except SyntaxError as err:
        raise RewardCodeError(f"syntax error: {err.msg}", err.lineno) from None
    except (ValueError, RecursionError, MemoryError) as err:  # null bytes, nesting too deep for the parser
        raise RewardCodeError(f"cannot parse the code: {type(err).__name__}: {err}") from None
    _check_depth(tree)
    for statement in tree.body:
        if not isinstance(statement, TOP_LEVEL) or (
                isinstance(statement, ast.Expr) and not isinstance(statement.value, ast.Constant)):
            raise RewardCodeError("only imports, function definitions, assignments and docstrings are allowed at the "
                                  "top level", statement.lineno)
    bindings = _import_bindings(tree)
    modules = {"np": "numpy", "math": "math"} | {k: m for k, (m, member) in bindings.items() if member is None}
    _strip_annotations(tree)
    for node in sorted(ast.walk(tree), key=_position):  # in source order, inner `a.b` before `a.b.c`
        _check_node(node, modules)
    entry = next((s for s in tree.body if isinstance(s, ast.FunctionDef) and s.name == ENTRY_POINT), None)
    if entry is None:
        raise RewardCodeError(f"the code must define {ENTRY_POINT}(obs, action, next_obs, **named) at the top level")
    keywords, required, takes_any = _signature(entry)
    return CheckedCode(source, _strip_imports(tree), bindings, keywords, required, takes_any)


def _check_depth(tree: ast.Module) -> None:
    """Reject syntax trees nested deeper than MAX_DEPTH (e.g. `x.T.T.T...` or `1+1+1...`): the checker, the compiler and
    ast transformers recurse over the tree, and a deep one would overflow their stacks instead of being rejected."""
    stack: list[tuple[ast.AST, int, int | None]] = [(tree, 0, None)]
    while stack:
        node, depth, line = stack.pop()
        line = getattr(node, "lineno", line)
        if depth > MAX_DEPTH:
            raise RewardCodeError(f"the code is nested more than {MAX_DEPTH} levels deep", line)
        stack.extend((child, depth + 1, line) for child in ast.iter_child_nodes(node))


def _position(node: ast.AST) -> tuple[int, int, int, int]:
    return (getattr(node, "lineno", 0), getattr(node, "col_offset", 0), getattr(node, "end_lineno", 0) or 0,
            getattr(node, "end_col_offset", 0) or 0)


def _import_bindings(tree: ast.Module) -> dict[str, tuple[str, str | None]]:
    """alias -> (module, member or None for the module itself) for every allowed import; others are errors."""
    bindings: dict[str, tuple[str, str | None]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in TYPING_MODULES:
                    continue
                if alias.name not in MODULE_NAMES or (alias.name == "numpy.linalg" and alias.asname is None):
                    raise RewardCodeError(f"import of '{alias.name}' is not allowed (only numpy and math)",
                                          node.lineno)
                bindings[alias.asname or alias.name] = (alias.name, None)
        elif isinstance(node, ast.ImportFrom):
            if node.level or node.module in TYPING_MODULES:
                if node.level:
                    raise RewardCodeError("relative imports are not allowed", node.lineno)
                continue
            if node.module not in MODULE_NAMES:
                raise RewardCodeError(f"import from '{node.module}' is not allowed (only numpy, numpy.linalg and "
                                      f"math)", node.lineno)
            for alias in node.names:
                if alias.name not in MODULE_NAMES[node.module]:
                    raise RewardCodeError(f"'{alias.name}' of {node.module} is not allowed", node.lineno)
                bindings[alias.asname or alias.name] = (node.module, alias.name)
    return bindings


def _strip_annotations(tree: ast.Module) -> None:
    """Drop type annotations so they are neither checked nor evaluated (`x: Dict[str, float] = ...` stays valid)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            node.returns = None
        elif isinstance(node, ast.arg):
            node.annotation = None
        elif isinstance(node, ast.AnnAssign):
            node.annotation = ast.Constant(None, lineno=node.lineno, col_offset=node.col_offset)


def _strip_imports(tree: ast.Module) -> ast.Module:
    """Replace import statements by `pass`: the names they bind are provided by the sandbox's globals."""

    class Strip(ast.NodeTransformer):
        def visit_Import(self, node: ast.AST) -> ast.AST:
            return ast.copy_location(ast.Pass(), node)

        visit_ImportFrom = visit_Import

    return Strip().visit(tree)


def _check_node(node: ast.AST, modules: Mapping[str, str]) -> None:
    line = getattr(node, "lineno", None)
    if not isinstance(node, ALLOWED_NODES):
        what = NODE_WORDS.get(type(node).__name__, type(node).__name__)
        raise RewardCodeError(f"'{what}' is not allowed in reward code", line)
    if isinstance(node, ast.FunctionDef):
        if node.decorator_list:
            raise RewardCodeError("decorators are not allowed", line)
        _check_name(node.name, line, modules, store=True)
    elif isinstance(node, ast.Name):
        _check_name(node.id, line, modules, store=not isinstance(node.ctx, ast.Load))
    elif isinstance(node, ast.arg):
        _check_name(node.arg, line, modules, store=True)
    elif isinstance(node, ast.keyword) and node.arg is not None and node.arg.startswith("_"):
        raise RewardCodeError(f"keyword '{node.arg}' starts with an underscore", line)
    elif isinstance(node, ast.Attribute):
        _check_attribute(node, modules)


def _check_name(name: str, line: int | None, modules: Mapping[str, str], store: bool) -> None:
    if name.startswith("_") and name != "_":
        raise RewardCodeError(f"name '{name}' starts with an underscore", line)
    if name in PYTHON_BUILTINS and name not in ALLOWED_BUILTINS:
        raise RewardCodeError(f"builtin '{name}' is not allowed (allowed: {', '.join(sorted(ALLOWED_BUILTINS))})",
                              line)
    if store and name in modules:
        raise RewardCodeError(f"'{name}' names the {modules[name]} module and cannot be reassigned", line)


def _module_of(node: ast.expr, modules: Mapping[str, str]) -> str | None:
    """The module an expression statically names (`np`, `np.linalg`, `math`), else None."""
    if isinstance(node, ast.Name):
        return modules.get(node.id)
    if isinstance(node, ast.Attribute) and _module_of(node.value, modules) == "numpy" and node.attr == "linalg":
        return "numpy.linalg"
    return None


def _check_attribute(node: ast.Attribute, modules: Mapping[str, str]) -> None:
    if node.attr.startswith("_"):
        raise RewardCodeError(f"attribute '{node.attr}' starts with an underscore", node.lineno)
    module = _module_of(node.value, modules)
    if module is not None:
        if node.attr not in MODULE_NAMES[module]:
            raise RewardCodeError(f"'{module}.{node.attr}' is not allowed in reward code", node.lineno)
    elif node.attr not in VALUE_ATTRIBUTES:
        raise RewardCodeError(f"attribute '.{node.attr}' is not allowed (allowed on values: "
                              f"{', '.join(sorted(VALUE_ATTRIBUTES))})", node.lineno)


def _signature(entry: ast.FunctionDef) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
    """(extra keyword names, those without defaults, has **named) of the entry point; checks the positional ones."""
    args = entry.args
    positional = [a.arg for a in args.posonlyargs + args.args]
    if tuple(positional[:3]) != POSITIONAL or args.posonlyargs[3:] or args.vararg is not None:
        raise RewardCodeError(f"{ENTRY_POINT} must take (obs, action, next_obs, ...) and optional keyword "
                              f"parameters, not ({', '.join(positional)}"
                              f"{', *' + args.vararg.arg if args.vararg else ''})", entry.lineno)
    extra = positional[3:]
    defaults = len(args.defaults)
    required = [name for i, name in enumerate(extra) if i < len(extra) - defaults]
    required += [a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is None]
    keywords = extra + [a.arg for a in args.kwonlyargs]
    return tuple(keywords), tuple(required), args.kwarg is not None


# ------------------------------------------------------------------------------------------------- framing
HEADER = struct.Struct("<Q")
MAX_HEADER_BYTES = 1 << 20
DTYPES = frozenset({"<f4", "<f8", "|b1", "<i4", "<i8", "|u1"})


def write_message(fd: int, header: dict, arrays: Mapping[str, np.ndarray] | None = None,
                  deadline: float | None = None) -> None:
    """Send a JSON header and raw arrays (dtype and shape listed in the header) over a pipe."""
    arrays = {k: v if v.flags.c_contiguous else v.copy() for k, v in (arrays or {}).items()}
    header = header | {"arrays": [[k, v.dtype.str, list(v.shape)] for k, v in arrays.items()]}
    text = json.dumps(header).encode()
    views = [memoryview(HEADER.pack(len(text)) + text), *(memoryview(v).cast("B") for v in arrays.values() if v.size)]
    while views:  # one writev per wake-up: a small message costs one system call
        if deadline is not None:
            _wait(fd, deadline, write=True)
        try:
            sent = os.writev(fd, views)
        except BlockingIOError:
            continue
        while sent:
            if sent >= len(views[0]):
                sent -= len(views.pop(0))
            else:
                views[0], sent = views[0][sent:], 0


def read_message(fd: int, max_bytes: int, deadline: float | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """Receive one `write_message`: (header, arrays). Malformed or oversized messages raise ValueError."""
    (length,) = HEADER.unpack(_read_exact(fd, HEADER.size, deadline))
    if length > MAX_HEADER_BYTES:
        raise ValueError(f"message header of {length} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        header = json.loads(bytes(_read_exact(fd, length, deadline)))
        layout = _layout(header.pop("arrays"), max_bytes)
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as err:
        raise ValueError(f"malformed message header: {type(err).__name__}: {err}"[:300]) from None
    arrays = {name: np.frombuffer(_read_exact(fd, size, deadline), dtype).reshape(shape)
              for name, dtype, shape, size in layout}
    return header, arrays


def _layout(entries: list, max_bytes: int) -> list[tuple[str, str, list[int], int]]:
    """(name, dtype, shape, bytes) of each array a header announces; unknown dtypes or too many bytes are errors."""
    layout, total = [], 0
    for name, dtype, shape in entries:
        if (not isinstance(name, str) or not isinstance(dtype, str) or dtype not in DTYPES
                or not all(isinstance(n, int) and 0 <= n <= max_bytes for n in shape)):
            raise ValueError(f"malformed array entry {[name, dtype, shape]!r:.200}")
        size = math.prod(shape) * np.dtype(dtype).itemsize
        total += size
        if total > max_bytes:
            raise ValueError(f"more than {max_bytes} bytes of arrays")
        layout.append((name, dtype, list(shape), size))
    return layout


def _wait(fd: int, deadline: float, write: bool = False) -> None:
    remaining = deadline - time.monotonic()
    ready = select.select([], [fd], [], max(remaining, 0))[1] if write else select.select([fd], [], [],
                                                                                           max(remaining, 0))[0]
    if not ready:
        raise TimeoutError


def _read_exact(fd: int, n: int, deadline: float | None) -> bytearray:
    buffer = bytearray(n)
    view, got = memoryview(buffer), 0
    while got < n:
        if deadline is not None:
            _wait(fd, deadline)
        count = os.readv(fd, [view[got:]])
        if count == 0:
            raise EOFError("the other end closed the pipe")
        got += count
    return buffer


# -------------------------------------------------------------------------------------------- worker side
def sandbox_globals(bindings: Mapping[str, tuple[str, str | None]]) -> dict:
    """Globals for checked code: only the allowed builtins, and namespaces holding only the allowed module names (so
    even a name the checker missed does not exist at run time)."""
    real = {"numpy": np, "numpy.linalg": np.linalg, "math": math}
    proxies = {module: types.SimpleNamespace(**{n: getattr(real[module], n) for n in names if n != "linalg"})
               for module, names in MODULE_NAMES.items()}
    proxies["numpy"].linalg = proxies["numpy.linalg"]
    allowed = {name: getattr(builtins, name) for name in ALLOWED_BUILTINS} | {"__import__": _numpy_internal_import}
    namespace = {"__builtins__": allowed, "np": proxies["numpy"], "math": proxies["math"]}
    for alias, (module, member) in bindings.items():
        namespace[alias] = proxies[module] if member is None else getattr(proxies[module], member)
    return namespace


def _numpy_internal_import(name: str, globals: dict | None = None, locals: dict | None = None,
                           fromlist: tuple = (), level: int = 0) -> types.ModuleType:
    """`__import__` of the sandbox's builtins, for numpy's C code only (e.g. `ndarray.sum` imports
    `numpy._core._methods` on first use through the caller's builtins); reward code cannot name it (underscore). It
    returns numpy modules that are already loaded and refuses everything else."""
    if level == 0 and name.split(".")[0] == "numpy" and name in sys.modules:
        return builtins.__import__(name, globals, locals, fromlist, level)
    raise ImportError(f"import of '{name}' is not allowed in reward code")


def apply_limits(limits: Mapping[str, float]) -> None:
    """Resource limits of the worker, set after its imports and before any reward code runs: CPU time (a lifetime
    hard cap; `serve` lowers the soft limit per call), address space, no file writes, no new processes, no new file
    descriptors (so no files or sockets can be opened), no core dumps; root drops to `nobody` so they stick."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # nothing may block on a full stderr pipe
    os.close(devnull)
    with open("/proc/self/statm") as statm:
        used = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    lifetime = int(limits["lifetime_cpu_seconds"])
    memory = used + int(limits["memory_mb"]) * 2 ** 20
    for limit, value in ((resource.RLIMIT_CPU, lifetime), (resource.RLIMIT_AS, memory), (resource.RLIMIT_FSIZE, 0),
                         (resource.RLIMIT_NPROC, 0), (resource.RLIMIT_NOFILE, 3), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(limit, (value, value))
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)  # nobody: rlimits cannot be raised again and the file system is read-only to us
    sys.setrecursionlimit(200)


def _cpu_used() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _set_cpu_budget(seconds: float, lifetime: int) -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (min(math.ceil(_cpu_used() + seconds), lifetime), lifetime))


def _user_error(err: BaseException) -> str:
    """`line N: Type: message` for an exception raised by reward code (the line is the innermost one in the code)."""
    line = None
    trace = err.__traceback__
    while trace is not None:
        if trace.tb_frame.f_code.co_filename == CODE_FILENAME:
            line = trace.tb_lineno
        trace = trace.tb_next
    text = f"{type(err).__name__}: {err}"[:500] if str(err) else type(err).__name__
    if isinstance(err, MemoryError):
        text += " (the sandbox's memory limit)"
    return f"line {line}: {text}" if line else text


def _as_output(result: object, batch: int, max_terms: int) -> dict[str, np.ndarray]:
    """The reward and terms returned by the code as float64 arrays of at most `batch` elements, keyed "reward" and
    "term:<name>"; anything else raises ValueError with the reason."""
    terms: object = {}
    if isinstance(result, tuple):
        if len(result) != 2:
            raise ValueError(f"{ENTRY_POINT} must return reward or (reward, terms), got a tuple of {len(result)}")
        result, terms = result
    if not isinstance(terms, dict):
        raise ValueError(f"terms must be a dict of name -> values, got {type(terms).__name__}")
    if len(terms) > max_terms:
        raise ValueError(f"{len(terms)} terms returned; at most {max_terms} are allowed")
    for name in terms:
        if not isinstance(name, str) or not 0 < len(name) <= 64:
            raise ValueError(f"term names must be strings of 1 to 64 characters, got {name!r:.80}")
    out = {}
    for key, value in [("reward", result), *((f"term:{k}", v) for k, v in terms.items())]:
        what = "the reward" if key == "reward" else f"term '{key[5:]}'"
        size = value.size if isinstance(value, np.ndarray) else len(value) if isinstance(value, (list, tuple)) else 1
        if size > batch:
            raise ValueError(f"{what} has {size} values, more than the batch of {batch}")
        try:
            out[key] = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError, OverflowError) as err:
            raise ValueError(f"{what} is not a number or an array of numbers ({type(value).__name__}): {err}"
                             ) from None
    return out


def serve(fd_in: int = 0, fd_out: int = 1) -> None:
    """The worker loop: load one program, then answer `call` messages until the parent closes the pipe."""
    warnings.simplefilter("ignore")  # numpy's divide-by-zero warnings etc.: the outputs are validated instead
    header, _ = read_message(fd_in, 0)
    limits = header["limits"]
    try:
        checked = check_code(header["source"])
        code = compile(checked.tree, CODE_FILENAME, "exec")
    except RewardCodeError as err:
        write_message(fd_out, {"status": "error", "kind": "static", "message": str(err)})
        return
    apply_limits(limits)
    namespace = sandbox_globals(checked.bindings)
    lifetime = int(limits["lifetime_cpu_seconds"])
    _set_cpu_budget(limits["cpu_seconds"], lifetime)
    try:
        exec(code, namespace)
        reply: dict = {"status": "ok"}
    except Exception as err:
        reply = {"status": "error", "kind": "runtime", "message": f"while loading the code: {_user_error(err)}"}
    write_message(fd_out, reply)
    if reply["status"] != "ok":
        return
    function = namespace[ENTRY_POINT]
    while True:
        try:
            request, arrays = read_message(fd_in, int(limits["max_input_bytes"]))
        except EOFError:
            return
        named = {k: arrays[k] for k in request["named"]}
        batch = len(arrays["obs"])
        _set_cpu_budget(limits["cpu_seconds"], lifetime)
        outputs: dict[str, np.ndarray] = {}
        try:
            result = function(arrays["obs"], arrays["action"], arrays["next_obs"], **named)
        except Exception as err:
            reply = {"status": "error", "kind": "runtime", "message": _user_error(err)}
        else:
            try:
                outputs, reply = _as_output(result, batch, int(limits["max_terms"])), {"status": "ok"}
            except Exception as err:  # whatever the outputs do, the worker answers
                reply = {"status": "error", "kind": "output", "message": str(err) or type(err).__name__}
        write_message(fd_out, reply | {"cpu": _cpu_used()}, outputs)
