"""The reactor boundary (issue 12 item 4): only the Twisted shells may import twisted.

The shells are the gateway's receivers and service (``gateway/``), every daemon's ``service.py``,
the runtime the daemons share (``turok_core/runtime/``: threads, consumer loop, self-metrics loop,
cache-query server); the twistd plugins (``twisted_plugins/``) lie outside the product packages.
Every other module is pure: it runs without a reactor, so a test, a benchmark or another producer
can use it alone. A pure module may not import twisted, directly (anywhere in the module, a
function's import included; only ``if TYPE_CHECKING:`` blocks are exempt, as they never run) or
through another module of the product that does.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("turok_core", "gateway", "finder", "keeper")


def is_shell(module: str) -> bool:
    """Whether ``module`` (dotted name) is one of the Twisted shells, allowed to import twisted."""
    parts = module.split(".")
    return parts[0] == "gateway" or parts[-1] == "service" or parts[:2] == ["turok_core", "runtime"]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def product_modules() -> dict[str, Path]:
    """Every module of the product packages, by dotted name."""
    return {module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def is_type_checking(node: ast.expr) -> bool:
    return (isinstance(node, ast.Name) and node.id == "TYPE_CHECKING"
            or isinstance(node, ast.Attribute) and node.attr == "TYPE_CHECKING")


def imports(path: Path, known: set[str]) -> list[tuple[int, str]]:
    """(line, module) for every absolute import in ``path`` that can run; for ``from package import
    module``, the submodule too."""
    found: list[tuple[int, str]] = []
    pending: list[ast.AST] = [ast.parse(path.read_text(), str(path))]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and is_type_checking(node.test):
            pending += node.orelse
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names
                      if f"{node.module}.{alias.name}" in known]
        pending += ast.iter_child_nodes(node)
    return sorted(found)


def with_parents(module: str) -> list[str]:
    """Importing ``a.b.c`` runs ``a``, ``a.b`` and ``a.b.c``."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def twisted_reach(modules: dict[str, Path]) -> dict[str, str]:
    """For each product module that brings twisted in when imported: how (``twisted.x`` or ``via m``)."""
    edges = {name: imports(path, set(modules)) for name, path in modules.items()}
    reach: dict[str, str] = {}
    for name, found in edges.items():
        direct = [imported for _line, imported in found if imported.split(".")[0] == "twisted"]
        if direct:
            reach[name] = direct[0]
    changed = True
    while changed:  # a fixed point: whatever imports a module that brings twisted in brings it in too
        changed = False
        for name, found in edges.items():
            if name in reach:
                continue
            via = next((m for _line, imported in found for m in with_parents(imported) if m in reach), None)
            if via is not None:
                reach[name], changed = f"via {via}", True
    return reach


def test_the_walk_finds_the_product() -> None:
    modules = product_modules()
    assert {"turok_core.model.config", "gateway.service", "finder", "keeper.cli"} <= set(modules)
    assert "turok_core.runtime.consumer" in twisted_reach(modules)  # the walk does see twisted imports


def test_only_the_twisted_shells_import_twisted() -> None:
    modules = product_modules()
    offenders = []
    for name, path in modules.items():
        if is_shell(name):
            continue
        for line, imported in imports(path, set(modules)):
            if imported.split(".")[0] == "twisted":
                offenders.append(f"{path.relative_to(ROOT)}:{line}: imports {imported}")
    assert not offenders, "pure modules import twisted (only the Twisted shells may):\n" + "\n".join(offenders)


def test_no_pure_module_imports_twisted_through_another() -> None:
    modules = product_modules()
    reach = twisted_reach(modules)
    offenders = [f"{modules[name].relative_to(ROOT)}: brings in twisted {how}"
                 for name, how in sorted(reach.items()) if not is_shell(name) and how.startswith("via ")]
    assert not offenders, "pure modules import a module that imports twisted:\n" + "\n".join(offenders)
