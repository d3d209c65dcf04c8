"""A corpus of hostile reward programs for the sandbox tests: each must be rejected by the static check or stopped at
run time with a clear error (`stopped_by` names how: "static", or the `RewardCodeError.kind` at run time)."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass


@dataclass(frozen=True)
class Hostile:
    name: str
    code: str
    stopped_by: str
    reason: str
    """A fragment of the error message (a regular expression)."""


def reward_body(body: str, header: str = "") -> str:
    """`body` as the body of compute_dense_reward, after optional top-level `header` lines."""
    return (textwrap.dedent(header) + "def compute_dense_reward(obs, action, next_obs):\n"
            + textwrap.indent(textwrap.dedent(body).strip("\n"), "    ") + "\n")


def static(name: str, body: str, reason: str, header: str = "") -> Hostile:
    return Hostile(name, reward_body(body, header), "static", reason)


def runtime(name: str, body: str, kind: str, reason: str, header: str = "") -> Hostile:
    return Hostile(name, reward_body(body, header), kind, reason)


IMPORTS = [
    static(f"import_{module}", "return obs[:, 0]", f"import of '{module}' is not allowed", f"import {module}\n")
    for module in ("os", "subprocess", "socket", "ctypes", "sys", "importlib", "builtins", "signal", "time", "pickle",
                   "shutil", "numpy.ctypeslib")
] + [
    static("import_inside_function", "import os\nreturn obs[:, 0]", "import of 'os' is not allowed"),
    static("from_os_import_system", "return obs[:, 0]", "import from 'os' is not allowed", "from os import system\n"),
    static("from_numpy_import_load", "return obs[:, 0]", "'load' of numpy is not allowed", "from numpy import load\n"),
    static("from_numpy_lib_import_format", "return obs[:, 0]", "import from 'numpy.lib' is not allowed",
           "from numpy.lib import format\n"),
    static("relative_import", "return obs[:, 0]", "relative imports are not allowed", "from . import sandbox\n"),
    static("dunder_import", "os = __import__('os')\nreturn obs[:, 0]", "'__import__' starts with an underscore"),
]

BUILTINS = [
    static(f"builtin_{name}", f"x = {call}\nreturn obs[:, 0]", f"builtin '{name}' is not allowed")
    for name, call in (("open", "open('canary.txt', 'w')"), ("eval", "eval('1 + 1')"), ("exec", "exec('y = 1')"),
                       ("compile", "compile('1', 'f', 'eval')"), ("getattr", "getattr(obs, 'ctypes')"),
                       ("setattr", "setattr(np, 'x', 1)"), ("delattr", "delattr(np, 'sum')"),
                       ("globals", "globals()"), ("locals", "locals()"), ("vars", "vars(np)"), ("input", "input()"),
                       ("breakpoint", "breakpoint()"), ("help", "help(np)"), ("memoryview", "memoryview(obs)"),
                       ("type", "type(obs)"), ("object", "object()"), ("print", "print('x' * 10 ** 9)"),
                       ("dir", "dir(np)"), ("SystemExit", "SystemExit(1)"), ("exit", "exit(0)"))
] + [
    static("builtin_as_lambda_default", "f = lambda g=open: g\nreturn obs[:, 0]", "builtin 'open' is not allowed"),
    static("builtins_dict", "b = __builtins__\nreturn obs[:, 0]", "'__builtins__' starts with an underscore"),
]

DUNDER_WALKS = [
    static("subclasses_walk", "x = ().__class__.__bases__[0].__subclasses__()\nreturn obs[:, 0]",
           "attribute '__class__' starts with an underscore"),
    static("array_class", "x = obs.__class__\nreturn obs[:, 0]", "attribute '__class__' starts with an underscore"),
    static("numpy_dict", "x = np.__dict__\nreturn obs[:, 0]", "attribute '__dict__' starts with an underscore"),
    static("lambda_globals", "g = (lambda: 0).__globals__\nreturn obs[:, 0]", "'__globals__' starts with"),
    static("own_globals", "g = compute_dense_reward.__globals__\nreturn obs[:, 0]", "'__globals__' starts with"),
    static("numpy_function_globals", "os = np.linalg.norm.__globals__['os']\nreturn obs[:, 0]",
           "'__globals__' starts with"),
    static("mro_walk", "x = [].__class__.__mro__\nreturn obs[:, 0]", "'__class__' starts with"),
    static("format_attribute_walk", "s = '{0.__class__.__mro__}'.format(obs)\nreturn obs[:, 0]",
           r"attribute '\.format' is not allowed"),
    static("format_map_walk", "s = '{x.__class__}'.format_map({'x': obs})\nreturn obs[:, 0]",
           r"attribute '\.format_map' is not allowed"),
    static("fstring_walk", "s = f'{obs.__class__}'\nreturn obs[:, 0]", "'__class__' starts with"),
    static("private_name", "_secret = 1\nreturn obs[:, 0]", "name '_secret' starts with an underscore"),
    static("generator_frame_walk", "g = (x for x in obs)\nf = g.gi_frame.f_back.f_globals\nreturn obs[:, 0]",
           r"attribute '\.gi_frame' is not allowed"),
    static("signal_without_import", "signal.alarm(1)\nreturn obs[:, 0]", r"attribute '\.alarm' is not allowed"),
    static("sleep_without_import", "time.sleep(100)\nreturn obs[:, 0]", r"attribute '\.sleep' is not allowed"),
    static("os_system_without_import", "os.system('touch canary')\nreturn obs[:, 0]",
           r"attribute '\.system' is not allowed"),
    static("keyword_dunder", "x = dict(__class__=1)\nreturn obs[:, 0]", "keyword '__class__' starts with"),
]

NUMPY_ESCAPES = [
    static(f"numpy_{name}", f"x = np.{call}\nreturn obs[:, 0]", f"'numpy.{name}' is not allowed")
    for name, call in (("load", "load('canary.npy')"), ("save", "save('canary.npy', obs)"),
                       ("savez", "savez('canary.npz', obs)"), ("savetxt", "savetxt('canary.txt', obs)"),
                       ("loadtxt", "loadtxt('/etc/passwd')"), ("fromfile", "fromfile('/etc/passwd')"),
                       ("memmap", "memmap('canary.bin', mode='w+', shape=(10,))"), ("ctypeslib", "ctypeslib"),
                       ("lib", "lib.format.open_memmap('x.npy')"), ("core", "core"), ("testing", "testing"),
                       ("f2py", "f2py"), ("frompyfunc", "frompyfunc(len, 1, 1)"), ("vectorize", "vectorize(len)"),
                       ("set_printoptions", "set_printoptions(threshold=10 ** 9)"), ("random", "random.rand(3)"),
                       ("ndarray", "ndarray((1,), buffer=obs)"))
] + [
    static(f"array_{attribute}", f"x = obs.{attribute}\nreturn obs[:, 0]", rf"attribute '\.{attribute}' is not allowed")
    for attribute in ("ctypes", "tofile", "dump", "dumps", "data", "base", "view")
] + [
    static("numpy_linalg_lapack", "x = np.linalg.lapack_lite\nreturn obs[:, 0]",
           "'numpy.linalg.lapack_lite' is not allowed"),
    static("numpy_alias_rebound", "m = np\nx = m.load('canary.npy')\nreturn obs[:, 0]",
           r"attribute '\.load' is not allowed"),
    static("numpy_reassigned", "np = obs\nreturn obs[:, 0]", "'np' names the numpy module and cannot be reassigned"),
    static("math_reassigned_by_parameter", "f = lambda math: math\nreturn obs[:, 0]", "'math' names the math module"),
]

SYNTAX = [
    static("decorator", "@np.abs\ndef f(x):\n    return x\nreturn obs[:, 0]", "decorators are not allowed"),
    static("class_definition", "class A:\n    pass\nreturn obs[:, 0]", "'class' is not allowed"),
    static("yield_generator", "yield obs[:, 0]", "'yield' is not allowed"),
    static("yield_from", "yield from [obs[:, 0]]", "'yield from' is not allowed"),
    static("try_swallows_everything", "try:\n    while True:\n        pass\nexcept BaseException:\n    pass\n"
           "return obs[:, 0]", "'try' is not allowed"),
    static("raise_system_exit", "raise SystemExit", "'raise' is not allowed"),
    static("with_statement", "with obs:\n    pass\nreturn obs[:, 0]", "'with' is not allowed"),
    static("global_statement", "global np\nreturn obs[:, 0]", "'global' is not allowed"),
    static("delete_statement", "x = 1\ndel x\nreturn obs[:, 0]", "'del' is not allowed"),
    Hostile("async_function", "async def compute_dense_reward(obs, action, next_obs):\n    return obs[:, 0]\n",
            "static", "only imports, function definitions"),
    Hostile("top_level_loop", "while True:\n    pass\n" + reward_body("return obs[:, 0]"), "static",
            "line 1: only imports, function definitions"),
    Hostile("no_entry_point", "def reward(obs):\n    return obs[:, 0]\n", "static", "must define compute_dense_reward"),
    Hostile("star_args_entry_point", "def compute_dense_reward(*args):\n    return 0\n", "static",
            r"must take \(obs, action, next_obs"),
    Hostile("syntax_error", reward_body("return obs[:, 0"), "static", "syntax error"),
    Hostile("deeply_nested", "x = " + "(" * 300 + "1" + ")" * 300 + "\n" + reward_body("return obs[:, 0]"), "static",
            "too many nested parentheses"),
    static("long_attribute_chain", "x = obs" + ".T" * 600 + "\nreturn obs[:, 0]", "nested more than 100 levels"),
    static("long_sum", "x = " + " + ".join(["obs"] * 600) + "\nreturn obs[:, 0]", "nested more than 100 levels"),
    Hostile("null_byte", reward_body("return obs[:, 0]") + "\x00", "static", "cannot parse|null bytes"),
    Hostile("huge_source", reward_body("return obs[:, 0]") + "#" * 200_000, "static", "characters long"),
]

RUNTIME = [
    runtime("infinite_loop", "while True:\n    pass", "timeout", "CPU time limit|wall-clock"),
    runtime("busy_counter", "i = 0\nwhile i >= 0:\n    i += 1", "timeout", "CPU time limit|wall-clock"),
    runtime("huge_power", "return 10 ** 10 ** 9", "timeout", "CPU time limit|wall-clock"),
    runtime("deep_recursion", "def f(n):\n    return f(n + 1)\nreturn f(0)", "runtime", "line 3: RecursionError"),
    runtime("lambda_recursion", "f = lambda n: f(n + 1)\nreturn f(0)", "runtime", "RecursionError"),
    runtime("numpy_memory_bomb", "return np.ones(10 ** 12)", "runtime", "line 2: MemoryError"),
    runtime("list_memory_bomb", "x = [0] * 10 ** 10\nreturn obs[:, 0]", "runtime", "line 2: MemoryError"),
    runtime("string_memory_bomb", "x = 'a' * 10 ** 10\nreturn obs[:, 0]", "runtime", "line 2: MemoryError"),
    runtime("square_matrix_bomb", "x = np.zeros((10 ** 6, 10 ** 6))\nreturn obs[:, 0]", "runtime", "MemoryError"),
    runtime("range_list_bomb", "x = list(range(10 ** 10))\nreturn obs[:, 0]", "runtime", "MemoryError"),
    runtime("enormous_reward", "return np.ones(10 ** 7)", "output", "10000000 values, more than the batch"),
    runtime("enormous_term_count", "return obs[:, 0], {str(i): 0.0 for i in range(10 ** 4)}", "output",
            "10000 terms returned"),
    runtime("enormous_term_name", "return obs[:, 0], {'x' * 10 ** 4: 0.0}", "output", "term names must be strings"),
    runtime("string_reward", "return 'reward'", "output", "the reward is not a number or an array of numbers"),
    runtime("overflowing_reward", "return 10 ** 400", "output", "int too large to convert to float"),
    runtime("module_without_import", "x = subprocess\nreturn obs[:, 0]", "runtime", "NameError: name 'subprocess'"),
    runtime("assert_false", "assert False, 'boom'\nreturn obs[:, 0]", "runtime", "AssertionError: boom"),
    Hostile("load_time_memory_bomb", "TABLE = [0] * 10 ** 10\n" + reward_body("return obs[:, 0]"), "runtime",
            "while loading the code: line 1: MemoryError"),
]

PROGRAMS: list[Hostile] = IMPORTS + BUILTINS + DUNDER_WALKS + NUMPY_ESCAPES + SYNTAX + RUNTIME
