"""AST rules for Python source: the local provider's most precise checks.

Calls are matched on their resolved dotted name (after ``from subprocess import run as r``,
``r(...)`` is ``subprocess.run``), so methods that share a name, like ``model.eval()``, never match.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

from sluice.ai.base import Finding
from sluice.ai.detectors import SQL_TEXT, looks_like_secret_name, looks_like_secret_value
from sluice.ai.rules import RULES

_EVAL = frozenset({"eval", "exec", "builtins.eval", "builtins.exec"})
# These always hand their command to /bin/sh.
_SHELL_CALLS = frozenset(
    {
        "os.system",
        "os.popen",
        "subprocess.getoutput",
        "subprocess.getstatusoutput",
        "commands.getoutput",
        "commands.getstatusoutput",
    }
)
_SUBPROCESS = frozenset(
    {
        "subprocess.run",
        "subprocess.call",
        "subprocess.check_call",
        "subprocess.check_output",
        "subprocess.Popen",
    }
)
_DESERIALIZERS = frozenset(
    {
        "pickle.load",
        "pickle.loads",
        "pickle.Unpickler",
        "_pickle.load",
        "_pickle.loads",
        "cPickle.load",
        "cPickle.loads",
        "dill.load",
        "dill.loads",
        "marshal.load",
        "marshal.loads",
        "shelve.open",
        "jsonpickle.decode",
        "pandas.read_pickle",
    }
)
_YAML_LOAD = frozenset({"yaml.load", "yaml.load_all"})
_YAML_UNSAFE = frozenset({"yaml.unsafe_load", "yaml.unsafe_load_all"})
_YAML_SAFE_LOADERS = frozenset(
    {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader", "FullLoader", "CFullLoader"}
)
_SQL_SINKS = frozenset(
    {"execute", "executemany", "executescript", "raw", "text", "read_sql", "read_sql_query"}
)
_MUTABLE_LITERALS = (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp)
_MUTABLE_CALLS = frozenset(
    {
        "list",
        "dict",
        "set",
        "bytearray",
        "collections.defaultdict",
        "collections.OrderedDict",
        "collections.Counter",
        "collections.deque",
    }
)
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
_FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef


def check_python(
    tree: ast.Module, enabled: frozenset[str], *, max_statements: int
) -> list[Finding]:
    """Run the AST rules in ``enabled`` over a parsed module."""
    checker = _Checker(enabled, max_statements)
    checker.visit(tree)
    return checker.findings


def _literal(node: ast.AST | None) -> str | None:
    """The value of a str constant, else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _is_static(node: ast.AST) -> bool:
    """True for a literal command: a str constant or a list/tuple of constants."""
    if isinstance(node, ast.List | ast.Tuple):
        return all(isinstance(element, ast.Constant) for element in node.elts)
    return isinstance(node, ast.Constant)


def _own_nodes(function: _FunctionNode) -> Iterator[ast.AST]:
    """Every node in ``function`` except those inside nested functions and classes."""
    stack: list[ast.AST] = list(function.body)
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, _SCOPES):
            stack.extend(ast.iter_child_nodes(node))


def _statement_count(body: list[ast.stmt]) -> int:
    """Statements in ``body``, recursively; a nested function or class counts as one."""
    count = 0
    for statement in body:
        count += 1
        if isinstance(statement, _SCOPES):
            continue
        for block in ("body", "orelse", "finalbody"):
            count += _statement_count(getattr(statement, block, []))
        for handler in getattr(statement, "handlers", []):
            count += _statement_count(handler.body)
        for case in getattr(statement, "cases", []):
            count += _statement_count(case.body)
    return count


def _without_docstring(body: list[ast.stmt]) -> list[ast.stmt]:
    if body and isinstance(body[0], ast.Expr) and _literal(body[0].value) is not None:
        return body[1:]
    return body


class _Checker(ast.NodeVisitor):
    def __init__(self, enabled: frozenset[str], max_statements: int) -> None:
        self.enabled = enabled
        self.max_statements = max_statements
        self.findings: list[Finding] = []
        self.aliases: dict[str, str] = {}
        # Per function scope: variable -> (its SQL text, line values were spliced in or None).
        # This is what catches `query = f"SELECT ..."` followed by `cursor.execute(query)`.
        self.sql_names: list[dict[str, tuple[str, int | None]]] = [{}]

    def report(self, node: ast.AST, rule: str, message: str, severity: str | None = None) -> None:
        if rule in self.enabled:
            self.findings.append(
                Finding(
                    line=getattr(node, "lineno", 0),
                    column=getattr(node, "col_offset", -1) + 1,
                    rule=rule,
                    severity=severity or RULES[rule].severity,
                    message=message,
                )
            )

    # Name resolution

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname:
                self.aliases[alias.asname] = alias.name

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module and not node.level:
            for alias in node.names:
                self.aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"

    def qualname(self, node: ast.AST) -> str | None:
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        parts.append(self.aliases.get(node.id, node.id))
        return ".".join(reversed(parts))

    # Functions

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._function(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._function(node)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._defaults(node.args, "lambda")
        self.generic_visit(node)

    def _function(self, node: _FunctionNode) -> None:
        self._defaults(node.args, node.name)
        count = _statement_count(_without_docstring(node.body))
        if count > self.max_statements:
            self.report(
                node,
                "quality.long-function",
                f"function {node.name}() has {count} statements (limit {self.max_statements}); "
                "split it into smaller functions",
            )
        if not node.name.startswith("test"):
            self._assert_validation(node)
        self.sql_names.append({})
        self.generic_visit(node)
        self.sql_names.pop()

    def _defaults(self, args: ast.arguments, name: str) -> None:
        positional = [*args.posonlyargs, *args.args]
        pairs = [
            *zip(positional[len(positional) - len(args.defaults) :], args.defaults, strict=True),
            *(
                (arg, default)
                for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True)
                if default is not None
            ),
        ]
        for arg, default in pairs:
            if isinstance(default, _MUTABLE_LITERALS) or (
                isinstance(default, ast.Call) and self.qualname(default.func) in _MUTABLE_CALLS
            ):
                self.report(
                    default,
                    "quality.mutable-default",
                    f"argument {arg.arg!r} of {name}() has a mutable default that every call "
                    "shares; default to None and create it inside the function",
                )
            self._secret(arg.arg, default)

    def _assert_validation(self, node: _FunctionNode) -> None:
        every = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
        params = {arg.arg for arg in every} - {"self", "cls"}
        for child in _own_nodes(node):
            if isinstance(child, ast.Assert) and any(
                isinstance(name, ast.Name) and name.id in params for name in ast.walk(child.test)
            ):
                self.report(
                    child,
                    "quality.assert-validation",
                    f"assert checks an argument of {node.name}() but python -O removes it; "
                    "raise ValueError/TypeError instead",
                )

    # Statements

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is None:
            self.report(
                node,
                "quality.bare-except",
                "bare except: also catches KeyboardInterrupt and SystemExit; "
                "catch Exception or the specific errors expected",
            )
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.generic_visit(node)
        for target in node.targets:
            self._assignment(target, node.value, node.lineno)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.generic_visit(node)
        if node.value is not None:
            self._assignment(node.target, node.value, node.lineno)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.generic_visit(node)
        if not (isinstance(node.target, ast.Name) and isinstance(node.op, ast.Add)):
            return
        scope = self.sql_names[-1]
        previous = scope.get(node.target.id)
        if previous is None:
            return
        text, built_on = previous
        if built_on is None and not self._static_string(node.value):
            built_on = node.lineno
        scope[node.target.id] = (text + self._sql_text(node.value), built_on)

    def _assignment(self, target: ast.AST, value: ast.expr, line: int) -> None:
        if isinstance(target, ast.Name):
            self._secret(target.id, value)
            self._track_sql(target.id, value, line)
        elif isinstance(target, ast.Attribute):
            self._secret(target.attr, value)
        elif isinstance(target, ast.Subscript) and (key := _literal(target.slice)) is not None:
            self._secret(key, value)

    def visit_Dict(self, node: ast.Dict) -> None:
        for key, value in zip(node.keys, node.values, strict=True):
            if (name := _literal(key)) is not None:
                self._secret(name, value)
        self.generic_visit(node)

    def _secret(self, name: str, value: ast.expr) -> None:
        literal = _literal(value)
        if (
            literal is not None
            and looks_like_secret_name(name)
            and looks_like_secret_value(literal)
        ):
            # The message names the variable, never the value: findings end up in logs and reports.
            self.report(
                value,
                "security.hardcoded-secret",
                f"hard-coded secret in {name!r}; load it from the environment or a secret manager",
            )

    # Calls

    def visit_Call(self, node: ast.Call) -> None:
        name = self.qualname(node.func)
        if name in _EVAL:
            self.report(
                node,
                "security.eval",
                f"{name.rpartition('.')[2]}() runs a string as Python code; parse data with "
                "json or ast.literal_eval, or dispatch through a dict of allowed functions",
            )
        elif name in _SHELL_CALLS:
            self._shell(node, f"{name}() runs its command through the shell")
        elif name in _SUBPROCESS and self._shell_enabled(node):
            self._shell(node, f"{name}(shell=True) runs the command through the shell")
        elif name in _DESERIALIZERS:
            self.report(
                node,
                "security.deserialization",
                f"{name}() can execute code while loading untrusted data; use JSON "
                "or another data-only format",
            )
        elif name in _YAML_UNSAFE or (name in _YAML_LOAD and not self._safe_yaml_loader(node)):
            self.report(
                node,
                "security.yaml-load",
                f"{name}() without SafeLoader can build arbitrary Python objects; "
                "use yaml.safe_load()",
            )
        self._sql_sink(node)
        for keyword in node.keywords:
            if keyword.arg:
                self._secret(keyword.arg, keyword.value)
        self.generic_visit(node)

    def _shell(self, node: ast.Call, what: str) -> None:
        command = node.args[0] if node.args else None
        dynamic = command is not None and not _is_static(command)
        self.report(
            node,
            "security.command-injection",
            f"{what}{' with a command built at run time' if dynamic else ''}; "
            "pass an argument list to subprocess.run() without shell=True",
            severity="high" if dynamic else "medium",
        )

    @staticmethod
    def _shell_enabled(node: ast.Call) -> bool:
        for keyword in node.keywords:
            if keyword.arg == "shell":
                # A variable might be True at run time, so only a literal falsy value is safe.
                value = keyword.value
                return not (isinstance(value, ast.Constant) and not value.value)
        return False

    @staticmethod
    def _safe_yaml_loader(node: ast.Call) -> bool:
        loader = next((kw.value for kw in node.keywords if kw.arg == "Loader"), None)
        if loader is None and len(node.args) > 1:
            loader = node.args[1]
        if isinstance(loader, ast.Attribute):
            return loader.attr in _YAML_SAFE_LOADERS
        return isinstance(loader, ast.Name) and loader.id in _YAML_SAFE_LOADERS

    # SQL built by string formatting

    def _sql_text(self, node: ast.AST) -> str:
        """The literal text of a string expression, with holes where values are interpolated."""
        literal = _literal(node)
        if literal is not None:
            return literal
        if isinstance(node, ast.JoinedStr):
            return "".join(_literal(part) or " ? " for part in node.values)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mod):
            return self._sql_text(node.left) + " " + self._sql_text(node.right)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            return self._sql_text(node.func.value) if node.func.attr == "format" else ""
        if isinstance(node, ast.Name) and node.id in self.sql_names[-1]:
            return self.sql_names[-1][node.id][0]
        return ""

    def _formatting(self, node: ast.AST) -> str | None:
        """How ``node`` interpolates values into SQL text, or None if it does not."""
        if isinstance(node, ast.JoinedStr):
            how = (
                "an f-string"
                if any(isinstance(v, ast.FormattedValue) for v in node.values)
                else None
            )
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
            how = "%-formatting" if self._sql_text(node.left) else None
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            how = None if self._static_string(node) else "string concatenation"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            how = "str.format()" if node.func.attr == "format" else None
        else:
            how = None
        return how if how and SQL_TEXT.search(self._sql_text(node)) else None

    def _static_string(self, node: ast.AST) -> bool:
        """True for text fixed in the source: literals, static SQL variables, and sums of those."""
        if _literal(node) is not None:
            return True
        if isinstance(node, ast.Name):
            return self.sql_names[-1].get(node.id, ("", 0))[1] is None
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self._static_string(node.left) and self._static_string(node.right)
        return False

    def _track_sql(self, name: str, value: ast.expr, line: int) -> None:
        scope = self.sql_names[-1]
        text = self._sql_text(value)
        if not SQL_TEXT.search(text):
            scope.pop(name, None)
            return
        built_on: int | None = line if self._formatting(value) else None
        if isinstance(value, ast.Name) and value.id in scope:
            built_on = scope[value.id][1]
        scope[name] = (text, built_on)

    def _sql_sink(self, node: ast.Call) -> None:
        func = node.func
        method = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if method not in _SQL_SINKS or not node.args:
            return
        query = node.args[0]
        how = self._formatting(query)
        if how is None and isinstance(query, ast.Name):
            built_on = self.sql_names[-1].get(query.id, ("", None))[1]
            if built_on is not None:
                how = f"string formatting on line {built_on}"
        if how:
            self.report(
                query,
                "security.sql-injection",
                f"SQL passed to {method}() is built with {how}; pass values as query "
                f"parameters, e.g. {method}(sql, params)",
            )
