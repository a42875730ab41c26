"""The package's parts import one way: base < kernel < trace, client < daemon < run, commands < cli."""

import ast
import functools
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "gmemfs"

# What each part may import, besides itself (gmemfs/__init__.py says why).
MAY_IMPORT = {
    "base": set(),
    "kernel": {"base"},
    "trace": {"base", "kernel"},
    "client": {"base", "kernel"},
    "daemon": {"base", "kernel", "trace"},
    "run": {"base", "kernel", "trace", "client", "daemon"},
    "commands": {"base", "kernel", "trace", "client"},
    "cli": {"base", "kernel", "trace", "client", "daemon", "run", "commands"},
    "__main__": {"cli"},
    "__init__": {"base", "kernel", "client"},
}
PARTS = ("base", "kernel", "trace", "daemon", "run", "commands")


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def gmemfs_imports(path: pathlib.Path) -> "set[str]":
    """The gmemfs modules a file imports, at the top or inside a function, made absolute."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "gmemfs" or name.startswith("gmemfs.")}


def part_of(module: str) -> str:
    names = module.split(".")
    return names[1] if len(names) > 1 else "__init__"


@functools.cache
def all_modules() -> "dict[str, set[str]]":
    return {module_name(path): gmemfs_imports(path) for path in PACKAGE.rglob("*.py")}


@pytest.mark.parametrize("module", sorted(all_modules()))
def test_a_module_imports_only_the_parts_below_its_own(module):
    own = part_of(module)
    allowed = MAY_IMPORT[own] | {own}
    upward = {target for target in all_modules()[module] if part_of(target) not in allowed}
    assert not upward, f"{module} ({own}) imports {sorted(upward)}"


def test_no_modules_import_each_other_in_a_circle():
    modules = all_modules()
    graph = {module: {target for target in targets if target in modules} for module, targets in modules.items()}
    done: set[str] = set()

    def visit(module: str, path: "list[str]") -> None:
        if module in path:
            raise AssertionError(" -> ".join(path[path.index(module) :] + [module]))
        if module in done:
            return
        for target in graph[module]:
            if target != module and not module.startswith(target + "."):  # a part's face is not a cycle
                visit(target, path + [module])
        done.add(module)

    for module in graph:
        visit(module, [])


@pytest.mark.parametrize("part", PARTS)
def test_each_part_says_what_it_owns_and_what_it_may_import(part):
    docstring = ast.get_docstring(ast.parse((PACKAGE / part / "__init__.py").read_text())) or ""
    assert "Owns:" in docstring and "May import:" in docstring, docstring


def test_every_module_is_in_a_part_or_is_one_of_the_few_at_the_top():
    top = {path.stem for path in PACKAGE.glob("*.py")}
    assert top == {"__init__", "__main__", "cli", "client"}, sorted(top)
