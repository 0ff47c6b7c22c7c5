"""IPython startup file that records which statements of each notebook cell ran.

Installed by ``tests/suite.py`` into a temporary ``IPYTHONDIR`` and active when
``NBHELPERS_CELL_TRACE`` names a folder. Every cell's syntax tree gets a call before each of its
statements (also inside functions, branches and loops a cell defines), so the record costs
nothing outside cell code. After each cell, ``trace-<pid>.json`` in that folder maps each cell's
source to its statement lines and the lines that ran. ``tests/notebook_coverage.py`` merges the
records of every profile and fails on a statement that never ran.
"""

import ast
import json
import os

_FOLDER = os.environ.get("NBHELPERS_CELL_TRACE", "").strip()
_NAME = "__nbhelpers_cell_trace__"


def _install(ip, folder: str) -> None:
    records: dict[str, dict[str, set[int]]] = {}
    current = {"source": None}

    def hit(source_key: str, line: int) -> None:
        records[source_key]["executed"].add(line)

    class Instrument(ast.NodeTransformer):
        """Put ``hit(cell, line)`` before every statement of every statement list."""

        def generic_visit(self, node):
            super().generic_visit(node)
            for field in ("body", "orelse", "finalbody"):
                stmts = getattr(node, field, None)
                if isinstance(stmts, list) and stmts and isinstance(stmts[0], ast.stmt):
                    setattr(node, field, self._marked(stmts))
            return node

        def _marked(self, stmts):
            out = []
            key = current["source"]
            for stmt in stmts:
                records[key]["statements"].add(stmt.lineno)
                call = ast.Expr(ast.Call(ast.Name(_NAME, ast.Load()),
                                         [ast.Constant(key), ast.Constant(stmt.lineno)], []))
                out += [ast.copy_location(call, stmt), stmt]
            return out

    class Transformer(ast.NodeTransformer):
        def visit_Module(self, node):
            if current["source"] is None:
                return node
            return ast.fix_missing_locations(Instrument().visit(node))

    def pre_run_cell(info):
        source = info.raw_cell
        current["source"] = source
        records.setdefault(source, {"statements": set(), "executed": set()})

    def post_run_cell(result):
        current["source"] = None
        path = os.path.join(folder, f"trace-{os.getpid()}.json")
        data = {src: {k: sorted(v) for k, v in rec.items()} for src, rec in records.items()}
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, path)

    os.makedirs(folder, exist_ok=True)
    ip.user_ns[_NAME] = hit
    ip.user_ns_hidden[_NAME] = hit
    ip.ast_transformers.append(Transformer())
    ip.events.register("pre_run_cell", pre_run_cell)
    ip.events.register("post_run_cell", post_run_cell)


if _FOLDER:
    from IPython import get_ipython

    _ip = get_ipython()
    if _ip is not None:
        _install(_ip, _FOLDER)
