"""The database_query validator: one plain SELECT over the curated views, by PostgreSQL's parser.

Everything not explicitly allowed is refused: every node of the parse tree must be of an allowed
kind, every relation a curated view (or a CTE in scope), every function, operator and type cast on
an allow-list. The views themselves are described here, once, for the validator and the model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pglast import ast, parse_sql
from pglast.enums import CoercionForm, SQLValueFunctionOp, SubLinkType
from pglast.parser import ParseError

from tools.base import ToolError

MAX_SQL_CHARS = 8_000
MAX_NODES = 4_000
MAX_DEPTH = 64


@dataclass(frozen=True)
class ViewColumn:
    """A documented column of a curated view."""

    name: str
    type: str
    doc: str


@dataclass(frozen=True)
class CuratedView:
    """A view the model may query, with what one row means and its columns."""

    name: str
    doc: str
    columns: tuple[ViewColumn, ...]


def _columns(*specs: tuple[str, str, str]) -> tuple[ViewColumn, ...]:
    return tuple(ViewColumn(*spec) for spec in specs)


_CUSTOMER_ID = ("customer_id", "uuid", "the customer; joins every view")
VIEW_CATALOGUE: tuple[CuratedView, ...] = (
    CuratedView("customers_v", "one row per customer", _columns(
        _CUSTOMER_ID,
        ("customer_key", "text", "short key, e.g. 'acme'"),
        ("name", "text", "customer name"),
        ("industry", "text", "industry"),
        ("arr", "numeric", "annual recurring revenue, USD"),
        ("renewal_date", "date", "next renewal date"),
        ("days_until_renewal", "integer", "days from today (UTC); negative once passed"),
        ("health_score", "integer", "0-100, higher is healthier"),
        ("has_account_plan", "boolean", "a strategic account plan exists"),
        ("csm_name", "text", "the customer success manager"),
        ("csm_email", "text", "the CSM's e-mail"),
    )),
    CuratedView("contracts_v", "one row per contract term (past and current)", _columns(
        ("contract_number", "text", "e.g. 'ORB-2024-0418'"),
        _CUSTOMER_ID,
        ("customer_name", "text", "customer name"),
        ("plan", "text", "plan name, e.g. 'Enterprise'"),
        ("seats", "integer", "licensed seats"),
        ("arr", "numeric", "contract ARR, USD"),
        ("start_date", "date", "term start"),
        ("end_date", "date", "term end"),
        ("status", "text", "active, expired, lapsed, renewed, cancelled or pending"),
        ("auto_renew", "boolean", "renews automatically"),
        ("days_until_end", "integer", "days from today (UTC) to end_date; negative once ended"),
    )),
    CuratedView(
        "renewals_v",
        "one row per customer: its renewal, its current contract (the active one, else the "
        "latest) and the workflow whose renewal window holds it",
        _columns(
            _CUSTOMER_ID,
            ("customer_name", "text", "customer name"),
            ("csm_email", "text", "the CSM's e-mail"),
            ("renewal_date", "date", "next renewal date"),
            ("days_until_renewal", "integer", "days from today (UTC); negative once passed"),
            ("arr", "numeric", "customer ARR, USD"),
            ("health_score", "integer", "0-100"),
            ("contract_number", "text", "current contract"),
            ("plan", "text", "current contract's plan"),
            ("seats", "integer", "current contract's seats"),
            ("contract_arr", "numeric", "current contract's ARR, USD"),
            ("contract_status", "text", "current contract's status"),
            ("contract_end_date", "date", "current contract's end"),
            ("auto_renew", "boolean", "current contract renews automatically"),
            ("matching_workflow_id", "text",
             "core workflow whose renewal window holds it, e.g. 'critical', or null"),
        ),
    ),
    CuratedView("account_teams_v", "one row per person on a customer's account team", _columns(
        _CUSTOMER_ID,
        ("customer_name", "text", "customer name"),
        ("role", "text", "ae, sa, csm, exec_sponsor or support"),
        ("member_name", "text", "the person's name"),
        ("member_email", "text", "the person's e-mail"),
    )),
)
CURATED_VIEWS = frozenset(view.name for view in VIEW_CATALOGUE)

ALLOWED_FUNCTIONS = frozenset({
    # aggregates
    "count", "sum", "avg", "min", "max", "string_agg", "array_agg", "bool_and", "bool_or",
    "every", "stddev", "stddev_pop", "stddev_samp", "variance", "var_pop", "var_samp",
    "percentile_cont", "percentile_disc", "mode",
    # window functions
    "row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag", "lead",
    "first_value", "last_value", "nth_value",
    # numbers
    "round", "abs", "ceil", "ceiling", "floor", "trunc", "sign", "mod", "sqrt",
    # text
    "lower", "upper", "initcap", "length", "char_length", "concat", "concat_ws", "left", "right",
    "substring", "substr", "btrim", "ltrim", "rtrim", "replace", "split_part", "position",
    "strpos", "starts_with",
    # dates and times
    "now", "date_trunc", "date_part", "extract", "age", "make_date", "make_interval", "to_char",
    "to_date", "timezone", "date_bin",
    # null handling (coalesce and nullif usually parse to their own nodes)
    "coalesce", "nullif", "greatest", "least",
})
# Functions the parser itself writes as pg_catalog.<name> for SQL syntax (SIMILAR TO ...).
_PARSER_GENERATED = frozenset({"similar_to_escape"})

ALLOWED_TYPES = frozenset({
    "text", "varchar", "bpchar", "char", "int2", "int4", "int8", "int", "integer", "smallint",
    "bigint", "numeric", "decimal", "float4", "float8", "real", "date", "time", "timestamp",
    "timestamptz", "interval", "bool", "boolean",
})
ALLOWED_OPERATORS = frozenset({
    "=", "<>", "!=", "<", ">", "<=", ">=", "+", "-", "*", "/", "%", "||",
    "~~", "!~~", "~~*", "!~~*", "~", "!~", "~*", "!~*",
    "BETWEEN", "NOT BETWEEN", "BETWEEN SYMMETRIC", "NOT BETWEEN SYMMETRIC",
})
_ALLOWED_VALUE_FUNCTIONS = frozenset({
    SQLValueFunctionOp.SVFOP_CURRENT_DATE, SQLValueFunctionOp.SVFOP_CURRENT_TIME,
    SQLValueFunctionOp.SVFOP_CURRENT_TIME_N, SQLValueFunctionOp.SVFOP_CURRENT_TIMESTAMP,
    SQLValueFunctionOp.SVFOP_CURRENT_TIMESTAMP_N, SQLValueFunctionOp.SVFOP_LOCALTIME,
    SQLValueFunctionOp.SVFOP_LOCALTIME_N, SQLValueFunctionOp.SVFOP_LOCALTIMESTAMP,
    SQLValueFunctionOp.SVFOP_LOCALTIMESTAMP_N,
})
_ALLOWED_SUBLINKS = frozenset({
    SubLinkType.EXISTS_SUBLINK, SubLinkType.ALL_SUBLINK, SubLinkType.ANY_SUBLINK,
    SubLinkType.EXPR_SUBLINK, SubLinkType.ARRAY_SUBLINK,
})
SYSTEM_COLUMNS = frozenset({"ctid", "xmin", "xmax", "cmin", "cmax", "tableoid", "oid"})
_FORBIDDEN_PREFIXES = ("pg_", "lo_", "dblink")

# Every node kind a read-only analytical SELECT needs; anything else is refused.
ALLOWED_NODES = frozenset({
    "SelectStmt", "ResTarget", "ColumnRef", "A_Star", "A_Const", "String", "Integer", "Float",
    "Boolean", "A_Expr", "BoolExpr", "NullTest", "BooleanTest", "FuncCall", "NamedArgExpr",
    "RangeVar", "JoinExpr", "RangeSubselect", "Alias", "SortBy", "WindowDef", "CaseExpr",
    "CaseWhen", "CoalesceExpr", "MinMaxExpr", "TypeCast", "TypeName", "SubLink", "WithClause",
    "CommonTableExpr", "GroupingSet", "GroupingFunc", "SQLValueFunction", "A_ArrayExpr",
    "RowExpr",
})
_NODE_HINTS = {
    "InsertStmt": "INSERT", "UpdateStmt": "UPDATE", "DeleteStmt": "DELETE", "MergeStmt": "MERGE",
    "RangeFunction": "a function in FROM (e.g. generate_series)",
    "RangeTableSample": "TABLESAMPLE", "ParamRef": "a $n parameter",
    "A_Indirection": "subscripts or field selection", "CollateClause": "COLLATE",
    "XmlExpr": "XML functions", "IntoClause": "SELECT ... INTO",
    "LockingClause": "FOR UPDATE/SHARE",
    "VariableSetStmt": "SET/RESET", "VariableShowStmt": "SHOW", "CopyStmt": "COPY", "DoStmt": "DO",
    "TransactionStmt": "transaction control (BEGIN, COMMIT, ...)", "ExplainStmt": "EXPLAIN",
    "CallStmt": "CALL", "CreateTableAsStmt": "CREATE TABLE AS", "PrepareStmt": "PREPARE",
    "ExecuteStmt": "EXECUTE", "LockStmt": "LOCK", "ListenStmt": "LISTEN", "NotifyStmt": "NOTIFY",
}


class UnsafeQuery(ToolError):
    """The SQL is not one plain SELECT over the curated views; says every reason."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("query refused: " + "; ".join(problems))


def check_sql(sql: str) -> list[str]:
    """Every reason `sql` may not run in the sandbox; an empty list means it may."""
    if not isinstance(sql, str) or not sql.strip():
        return ["the query is empty"]
    if len(sql) > MAX_SQL_CHARS:
        return [f"the query is longer than {MAX_SQL_CHARS} characters"]
    try:
        statements = parse_sql(sql)
    except ParseError as exc:
        return [f"not valid PostgreSQL: {exc}"]
    except RecursionError:
        return ["the query is nested too deeply"]
    if len(statements) != 1:
        return [f"send exactly one statement (got {len(statements)})"]
    statement = statements[0].stmt
    if not isinstance(statement, ast.SelectStmt):
        return [f"only SELECT is allowed, not {_statement_name(statement)}"]
    return _dedupe(_walk(statement))


def ensure_safe_sql(sql: str) -> str:
    """The statement to run (trailing `;` and blanks removed), or UnsafeQuery with every reason."""
    problems = check_sql(sql)
    if problems:
        raise UnsafeQuery(problems)
    statement = parse_sql(sql)[0]
    # pglast reports character offsets; a length of 0 means "to the end of the text".
    start = statement.stmt_location or 0
    end = start + statement.stmt_len if statement.stmt_len else len(sql)
    return sql[start:end].strip().rstrip(";").strip()


def _walk(root: ast.SelectStmt) -> Iterator[str]:
    """Visit every node once, iteratively (deep trees must not exhaust Python's stack)."""
    stack: list[tuple[Any, frozenset[str], int]] = [(root, frozenset(), 0)]
    visited = 0
    while stack:
        node, ctes, depth = stack.pop()
        if isinstance(node, list | tuple):
            stack.extend((child, ctes, depth) for child in node)
            continue
        if not isinstance(node, ast.Node):
            continue
        visited += 1
        if visited > MAX_NODES or depth > MAX_DEPTH:
            yield "the query is too large or nested too deeply"
            return
        kind = type(node).__name__
        if kind not in ALLOWED_NODES:
            yield f"{_NODE_HINTS.get(kind, kind)} is not allowed"
            continue
        check = _CHECKS.get(kind)
        if check is not None:
            yield from check(node, ctes)
        stack.extend(_children(node, ctes, depth + 1))


def _children(
    node: ast.Node, ctes: frozenset[str], depth: int
) -> Iterator[tuple[Any, frozenset[str], int]]:
    """A node's children, each with the CTE names visible to it."""
    if isinstance(node, ast.SelectStmt) and node.withClause is not None:
        # A CTE sees the CTEs before it (not itself: without RECURSIVE its own name would mean a
        # real table); the body of the SELECT sees them all.
        visible = ctes
        for cte in node.withClause.ctes or ():
            yield cte, visible, depth
            visible = visible | {cte.ctename}
        ctes = visible
    for slot in getattr(node, "__slots__", ()):
        if slot == "withClause":
            continue
        value = getattr(node, slot, None)
        if isinstance(value, ast.Node | list | tuple):
            yield value, ctes, depth


def _check_select(node: ast.SelectStmt, _ctes: frozenset[str]) -> Iterator[str]:
    if node.intoClause is not None:
        yield "SELECT ... INTO is not allowed"
    if node.lockingClause:
        yield "FOR UPDATE/SHARE is not allowed"
    if node.withClause is not None and node.withClause.recursive:
        yield "WITH RECURSIVE is not allowed"


def _check_cte(node: ast.CommonTableExpr, _ctes: frozenset[str]) -> Iterator[str]:
    if not isinstance(node.ctequery, ast.SelectStmt):
        yield f"a WITH query must be a SELECT, not {_statement_name(node.ctequery)}"
    if node.search_clause is not None or node.cycle_clause is not None:
        yield "SEARCH/CYCLE clauses are not allowed"
    yield from _identifier(node.ctename)


def _check_range_var(node: ast.RangeVar, ctes: frozenset[str]) -> Iterator[str]:
    name = node.relname or ""
    unqualified = node.catalogname is None and node.schemaname is None
    in_public = node.catalogname is None and node.schemaname == "public"
    if name in CURATED_VIEWS and (unqualified or in_public):
        return
    if unqualified and name in ctes:
        return
    yield f"relation {_qualified(node)} is not allowed; query only {_view_list()}"


def _check_func(node: ast.FuncCall, _ctes: frozenset[str]) -> Iterator[str]:
    names = [part.sval or "" for part in node.funcname or ()]
    # Identifiers are case-sensitive once parsed: "COUNT" is not count.
    name = names[-1] if names else ""
    generated = node.funcformat == CoercionForm.COERCE_SQL_SYNTAX or name in _PARSER_GENERATED
    qualified_ok = len(names) == 2 and names[0] == "pg_catalog" and generated
    if len(names) > 1 and not qualified_ok:
        yield f"function {'.'.join(names)} is not allowed (no schema-qualified functions)"
    elif name not in ALLOWED_FUNCTIONS and not (qualified_ok and name in _PARSER_GENERATED):
        yield f"function {name}() is not allowed"
    if node.func_variadic:
        yield "VARIADIC is not allowed"


def _check_column(node: ast.ColumnRef, _ctes: frozenset[str]) -> Iterator[str]:
    for field in node.fields or ():
        if isinstance(field, ast.String) and field.sval:
            if field.sval.lower() in SYSTEM_COLUMNS:
                yield f"system column {field.sval} is not allowed"
            else:
                yield from _identifier(field.sval)


def _check_type(node: ast.TypeName, _ctes: frozenset[str]) -> Iterator[str]:
    names = [part.sval for part in node.names or ()]
    if names[:1] == ["pg_catalog"]:
        names = names[1:]
    label = ".".join(names)
    if len(names) != 1 or names[0].lower() not in ALLOWED_TYPES:
        yield f"cast to {label} is not allowed"
    if node.arrayBounds or node.setof or node.pct_type:
        yield f"cast to {label}[] / SETOF / %TYPE is not allowed"


def _check_operator(node: ast.A_Expr, _ctes: frozenset[str]) -> Iterator[str]:
    yield from _operator(node.name)


def _check_sublink(node: ast.SubLink, _ctes: frozenset[str]) -> Iterator[str]:
    if node.subLinkType not in _ALLOWED_SUBLINKS:
        yield "this kind of subquery is not allowed"
    if node.operName:
        yield from _operator(node.operName)


def _check_sort(node: ast.SortBy, _ctes: frozenset[str]) -> Iterator[str]:
    if node.useOp:
        yield from _operator(node.useOp)


def _check_value_function(node: ast.SQLValueFunction, _ctes: frozenset[str]) -> Iterator[str]:
    if node.op not in _ALLOWED_VALUE_FUNCTIONS:
        yield "only date/time value functions (current_date, ...) are allowed"


def _check_target(node: ast.ResTarget, _ctes: frozenset[str]) -> Iterator[str]:
    if node.name:
        yield from _identifier(node.name)


def _check_alias(node: ast.Alias, _ctes: frozenset[str]) -> Iterator[str]:
    yield from _identifier(node.aliasname)


_CHECKS: dict[str, Callable[[Any, frozenset[str]], Iterator[str]]] = {
    "SelectStmt": _check_select,
    "CommonTableExpr": _check_cte,
    "RangeVar": _check_range_var,
    "FuncCall": _check_func,
    "ColumnRef": _check_column,
    "TypeName": _check_type,
    "A_Expr": _check_operator,
    "SubLink": _check_sublink,
    "SortBy": _check_sort,
    "SQLValueFunction": _check_value_function,
    "ResTarget": _check_target,
    "Alias": _check_alias,
}


def _operator(name: Any) -> Iterator[str]:
    parts = [part.sval for part in name or ()]
    if len(parts) != 1 or parts[0] not in ALLOWED_OPERATORS:
        yield f"operator {'.'.join(parts)} is not allowed"


def _identifier(name: str | None) -> Iterator[str]:
    if name and name.lower().startswith(_FORBIDDEN_PREFIXES):
        yield f"identifier {name} is not allowed (pg_*, lo_*, dblink* are reserved)"


def _qualified(node: ast.RangeVar) -> str:
    return ".".join(p for p in (node.catalogname, node.schemaname, node.relname) if p)


def _view_list() -> str:
    return ", ".join(sorted(CURATED_VIEWS))


def _statement_name(node: Any) -> str:
    kind = type(node).__name__
    return _NODE_HINTS.get(kind, kind)


def _dedupe(problems: Iterator[str]) -> list[str]:
    return list(dict.fromkeys(problems))
