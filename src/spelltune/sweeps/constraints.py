"""A sweep's `constraints`: comparisons of params keys in a small, bounded expression
language (no names but params keys, no calls, exponents and string arithmetic refused)."""

from __future__ import annotations

import ast
import operator
from typing import Any

from spelltune.sweeps.overrides import PARAMS_KEYS, unknown_key_message

_CMP = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
        ast.Eq: operator.eq, ast.NotEq: operator.ne}


def _bounded_pow(base, exponent):
    """** within what a params comparison needs: `lora.r ** 10 ** 10` would run for hours."""
    if abs(exponent) > 64:
        raise OverflowError(f"exponent {exponent} is too large")
    return operator.pow(base, exponent)


def _number_mul(a, b):
    """* of numbers only: `"x" * 10 ** 12` would fill the memory."""
    if isinstance(a, str) or isinstance(b, str):
        raise TypeError("no arithmetic on strings")
    return operator.mul(a, b)


_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: _number_mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: _bounded_pow}


class Constraint:
    """A comparison between params, e.g. `lora.alpha >= lora.r` or
    `train.warmup_steps * 4 <= train.max_steps`: names are dotted params keys; numbers,
    + - * / // % **, comparisons (chains too), and/or/not."""

    def __init__(self, expr: str):
        self.expr = expr
        try:
            self.tree = ast.parse(expr.strip(), mode="eval").body
        except SyntaxError as exc:
            raise ValueError(f"constraint {expr!r}: not an expression ({exc.msg})") from None
        self.keys: set[str] = set()
        self._check(self.tree)
        if not isinstance(self.tree, (ast.Compare, ast.BoolOp)) and not (
            isinstance(self.tree, ast.UnaryOp) and isinstance(self.tree.op, ast.Not)
        ):
            raise ValueError(f"constraint {expr!r}: must be a comparison such as lora.alpha >= lora.r")

    def _check(self, node: ast.AST) -> None:
        if isinstance(node, (ast.Name, ast.Attribute)):
            key = _dotted(node)
            if key is None or key not in PARAMS_KEYS:
                shown = key or ast.unparse(node)
                raise ValueError(f"constraint {self.expr!r}: {shown}: {unknown_key_message(shown)}")
            self.keys.add(key)
        elif isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)):
            pass
        elif isinstance(node, ast.Compare) and all(type(op) in _CMP for op in node.ops):
            for child in [node.left, *node.comparators]:
                self._check(child)
        elif isinstance(node, ast.BinOp) and type(node.op) in _BIN:
            self._check(node.left)
            self._check(node.right)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
            self._check(node.operand)
        elif isinstance(node, ast.BoolOp):
            for child in node.values:
                self._check(child)
        else:
            raise ValueError(f"constraint {self.expr!r}: {ast.unparse(node)!r} is not allowed "
                             "(use params keys, numbers, arithmetic, comparisons, and/or/not)")

    def holds(self, flat: dict[str, Any]) -> bool:
        return bool(self._eval(self.tree, flat))

    def _eval(self, node: ast.AST, flat: dict[str, Any]) -> Any:
        if isinstance(node, (ast.Name, ast.Attribute)):
            return flat[_dotted(node)]
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, flat)
            for op, comp in zip(node.ops, node.comparators):
                right = self._eval(comp, flat)
                if not _CMP[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.BinOp):
            return _BIN[type(node.op)](self._eval(node.left, flat), self._eval(node.right, flat))
        if isinstance(node, ast.UnaryOp):
            v = self._eval(node.operand, flat)
            return not v if isinstance(node.op, ast.Not) else (-v if isinstance(node.op, ast.USub) else +v)
        if isinstance(node, ast.BoolOp):
            vals = (self._eval(v, flat) for v in node.values)
            return all(vals) if isinstance(node.op, ast.And) else any(vals)
        raise AssertionError(ast.dump(node))


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def safe_holds(constraint: Constraint, flat: dict[str, Any]) -> bool:
    try:
        return constraint.holds(flat)
    except (TypeError, ZeroDivisionError, KeyError, OverflowError):
        return False
