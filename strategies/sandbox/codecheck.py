"""Static checks of strategy source done in the parent (no execution)."""

from __future__ import annotations

import ast

from .result import CodeCheck

MAX_LOOKBACK = 5000


def inspect_code(code: str) -> CodeCheck:
    """Compile ``code`` and check the strategy contract without running it."""
    try:
        tree = ast.parse(code, filename="<strategy>")
        compile(tree, "<strategy>", "exec")
    except SyntaxError as exc:
        return CodeCheck(False, f"syntax error: {exc.msg} (line {exc.lineno})", None, exc.lineno)
    except ValueError as exc:  # e.g. source containing NUL bytes
        return CodeCheck(False, f"syntax error: {exc}", None)
    except (RecursionError, MemoryError):  # the parser's limits on pathological nesting
        return CodeCheck(False, "syntax error: the code is nested too deeply", None)
    lookback, lookback_error = _read_lookback(tree)
    if lookback_error:
        return CodeCheck(False, lookback_error[0], None, lookback_error[1])
    func_error = _check_generate_signal(tree)
    if func_error:
        return CodeCheck(False, func_error[0], lookback, func_error[1])
    return CodeCheck(True, "", lookback)


def _check_generate_signal(tree: ast.Module) -> tuple[str, int | None] | None:
    # Only top-level definitions count: the child looks the name up in the module namespace.
    funcs = [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name == "generate_signal"
    ]
    if not funcs:
        return "generate_signal(candles, settings) is not defined", None
    func = funcs[-1]
    if isinstance(func, ast.AsyncFunctionDef):
        return "generate_signal must be a plain function, not async", func.lineno
    if not _accepts_two_positional(func.args):
        return "generate_signal must take exactly 2 parameters (candles, settings)", func.lineno
    return None


def _accepts_two_positional(args: ast.arguments) -> bool:
    positional = [*args.posonlyargs, *args.args]
    required_kwonly = [
        a for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is None
    ]
    if required_kwonly:
        return False
    if args.vararg is not None:
        return len(positional) - len(args.defaults) <= 2
    required = len(positional) - len(args.defaults)
    return required <= 2 <= len(positional)


def _read_lookback(tree: ast.Module) -> tuple[int | None, tuple[str, int] | None]:
    """LOOKBACK when assigned a literal at module level; a literal out of range is an error,
    a computed value is left to the child to validate at run time."""
    value: int | None = None
    for node in tree.body:
        target_value = _lookback_assignment(node)
        if target_value is None:
            continue
        if not isinstance(target_value, ast.Constant):
            value = None
            continue
        literal = target_value.value
        if isinstance(literal, bool) or not isinstance(literal, int):
            return None, (f"LOOKBACK must be an int in 1..{MAX_LOOKBACK}", node.lineno)
        if not 1 <= literal <= MAX_LOOKBACK:
            return None, (f"LOOKBACK must be an int in 1..{MAX_LOOKBACK}", node.lineno)
        value = literal
    return value, None


def _lookback_assignment(node: ast.stmt) -> ast.expr | None:
    if isinstance(node, ast.Assign):
        names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        return node.value if "LOOKBACK" in names else None
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return node.value if node.target.id == "LOOKBACK" else None
    return None
