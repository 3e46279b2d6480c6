"""STYLE.md section 1 and 2, enforced on the source: imports go one way, only settings reads the environment,
and every route documents itself for the OpenAPI page.

Imports are read with `ast` from the files (including imports inside functions), so nothing is imported to check.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("agentmem", "api", "cli", "workers", "pipelines", "core", "schemas")

# api → workers → pipelines → core → schemas: a layer imports nothing from the layers above it.
FORBIDDEN_IMPORTS: dict[str, frozenset[str]] = {
    "schemas": frozenset({"core", "pipelines", "workers", "api", "cli", "agentmem"}),
    "core": frozenset({"pipelines", "workers", "api", "cli", "agentmem"}),
    # Pipelines run the same from a route, an actor, a CLI or a test: no web or queue framework.
    "pipelines": frozenset({"workers", "api", "cli", "agentmem", "fastapi", "starlette", "dramatiq"}),
    "workers": frozenset({"api", "cli", "agentmem"}),
    # The API sends jobs by name (core/queue.py): importing the actors would build a worker's broker.
    "api": frozenset({"workers", "cli", "agentmem"}),
    # The SDK is a client of the HTTP API: it shares the API's models (schemas/), nothing of the server.
    "agentmem": frozenset({"core", "pipelines", "workers", "api", "cli", "fastapi", "starlette", "dramatiq",
                           "sqlalchemy", "sqlmodel", "redis"}),
}

# Only core/settings.py reads the environment; cli/up.py and cli/main.py copy it whole into the
# child processes they start (servers, the dramatiq worker).
# The sandbox launcher is a process of its own, never imported: it passes an MCP server the secrets it was
# given in its environment (so they stay off command lines), and reads no settings.
ENVIRONMENT_READERS_ALLOWED = {"core/settings.py", "cli/up.py", "cli/main.py", "pipelines/tools/sandbox_exec.py"}


def source_files(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package_parts = list(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[:len(package_parts) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # `from pkg import module` imports pkg.module: record it so `from api import app` is seen.
            found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
    return found


def test_the_layers_exist_where_this_test_looks_for_them():
    for package in PACKAGES:
        assert source_files(package), f"no Python files under {package}/"


@pytest.mark.parametrize("layer", sorted(FORBIDDEN_IMPORTS))
def test_layer_imports_nothing_from_the_layers_above_it(layer):
    forbidden = FORBIDDEN_IMPORTS[layer]
    violations = [f"{relative(path)}:{line} imports {module}"
                  for path in source_files(layer)
                  for line, module in imported_modules(path)
                  if module.split(".")[0] in forbidden]
    assert not violations, f"{layer}/ must not import {sorted(forbidden)}:\n" + "\n".join(violations)


# The CLI's API commands call the API through the SDK, the one HTTP client; `agentmem mcp` hands the API's MCP tools
# (api/mcp_tools.py, which take an httpx client) a client of their own, and `up` only supervises processes.
HTTP_CLIENT_ALLOWED_IN_CLI = {"cli/mcp_stdio.py"}


def test_the_cli_calls_the_api_only_through_the_sdk():
    violations = [f"{relative(path)}:{line} imports {module}"
                  for path in source_files("cli")
                  if relative(path) not in HTTP_CLIENT_ALLOWED_IN_CLI
                  for line, module in imported_modules(path)
                  if module.split(".")[0] in ("httpx", "httpx_sse", "requests", "urllib3")]
    assert not violations, "use the SDK (agentmem) instead of a second HTTP client:\n" + "\n".join(violations)


def environment_reads(path: Path) -> list[tuple[int, str]]:
    """(line, expression) of every read of the process environment: os.environ, os.getenv, environ.get, …"""
    tree = ast.parse(path.read_text(), filename=str(path))
    reads: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "os" and node.attr in ("environ", "environb", "getenv", "getenvb"):
                reads.append((node.lineno, f"os.{node.attr}"))
            elif node.value.id in ("environ", "environb") and node.attr in ("get", "copy", "items", "keys", "values"):
                reads.append((node.lineno, f"{node.value.id}.{node.attr}"))
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            reads.extend((node.lineno, f"from os import {alias.name}") for alias in node.names
                         if alias.name in ("environ", "environb", "getenv", "getenvb"))
    return reads


def test_only_settings_reads_the_environment():
    violations = [f"{relative(path)}:{line} reads {expression}"
                  for package in PACKAGES
                  for path in source_files(package)
                  if relative(path) not in ENVIRONMENT_READERS_ALLOWED
                  for line, expression in environment_reads(path)]
    assert not violations, "read settings through core.settings.get_settings():\n" + "\n".join(violations)


def test_environment_check_sees_the_allowed_reader():
    # Guards the detector itself: cli/up.py does read os.environ, so a blind check would fail here.
    assert environment_reads(ROOT / "cli" / "up.py")


# --- One way to reach a setting: get_settings() where the value is used (README "Contributing") ---------------

# Modules that read settings while they are imported, and why they must.
SETTINGS_AT_IMPORT_ALLOWED = {
    "workers/main.py": "dramatiq starts a worker process by importing it: its import is the process's start",
    "workers/actors.py": "Dramatiq fixes an actor's options (retries, backoff, time limit) when it is declared",
}


def _is_call_of(node: ast.AST, name: str) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (isinstance(func, ast.Name) and func.id == name) or (isinstance(func, ast.Attribute) and func.attr == name)


def settings_reads_at_import(source: str) -> list[int]:
    """Lines where `get_settings()` runs when the module is imported: module level, class bodies, decorators
    and default values, but not the bodies of functions."""
    found: list[int] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            evaluated_now = [*node.args.defaults, *(d for d in node.args.kw_defaults if d is not None)]
            if not isinstance(node, ast.Lambda):
                evaluated_now += node.decorator_list
            for child in evaluated_now:
                visit(child)
            return
        if _is_call_of(node, "get_settings"):
            found.append(node.lineno)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return sorted(found)


def settings_handed_around(source: str) -> list[tuple[int, str]]:
    """(line, what) of every `Settings(...)` built and every parameter typed `Settings`."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if _is_call_of(node, "Settings"):
            found.append((node.lineno, "builds Settings()"))
        elif isinstance(node, ast.arg) and node.annotation is not None:
            annotation = ast.unparse(node.annotation)
            if re.search(r"\bSettings\b", annotation):
                found.append((node.lineno, f"takes {node.arg}: {annotation}"))
    return found


def agentmem_variable_reads(source: str) -> list[tuple[int, str]]:
    """(line, variable) of every read of an AGENTMEM_* variable from the environment: os.environ[...],
    os.environ.get(...), os.getenv(...). Writing one into a child process's environment is not a read."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        key = None
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            key = node.slice if "environ" in ast.unparse(node.value) else None
        elif isinstance(node, ast.Call) and node.args:
            key = node.args[0] if re.search(r"\b(environ\.get|getenv)$", ast.unparse(node.func)) else None
        if isinstance(key, ast.Constant) and str(key.value).startswith("AGENTMEM_"):
            found.append((node.lineno, key.value))
    return found


def test_no_module_reads_settings_at_import_but_the_allowed_ones():
    violations = [f"{relative(path)}:{line} calls get_settings() at import time"
                  for package in PACKAGES
                  for path in source_files(package)
                  if relative(path) not in SETTINGS_AT_IMPORT_ALLOWED
                  for line in settings_reads_at_import(path.read_text())]
    assert not violations, ("call get_settings() inside the function that uses the value, so importing reads "
                            "nothing and a test's override_settings reaches it:\n" + "\n".join(violations))


def test_the_modules_allowed_to_read_settings_at_import_still_do():
    # An entry that no longer applies would silently allow the next one: drop it instead.
    stale = [name for name in SETTINGS_AT_IMPORT_ALLOWED if not settings_reads_at_import((ROOT / name).read_text())]
    assert not stale, f"remove from SETTINGS_AT_IMPORT_ALLOWED: {stale}"


def test_settings_are_neither_built_nor_passed_around():
    violations = [f"{relative(path)}:{line} {what}"
                  for package in (*PACKAGES, "bench")
                  for path in source_files(package)
                  if relative(path) != "core/settings.py"
                  for line, what in settings_handed_around(path.read_text())]
    assert not violations, ("call get_settings() where the value is used instead of building Settings or "
                            "taking it as a parameter:\n" + "\n".join(violations))


def test_nothing_but_settings_reads_an_agentmem_variable():
    # The benchmarks and the CLI copy the environment into the processes they start; none reads a setting from it.
    violations = [f"{relative(path)}:{line} reads {name}"
                  for package in (*PACKAGES, "bench")
                  for path in source_files(package)
                  if relative(path) != "core/settings.py"
                  for line, name in agentmem_variable_reads(path.read_text())]
    assert not violations, "add a field to core.settings.Settings and call get_settings():\n" + "\n".join(violations)


def test_the_settings_detectors_see_what_they_look_for():
    source = """
import os
from core.settings import Settings, get_settings

LIMIT = get_settings().limit


class Thing:
    size = get_settings().size


@register(get_settings().name)
def handler(x=get_settings().default, settings: Settings | None = None):
    return get_settings().inside, Settings(), os.environ["AGENTMEM_PORT"], os.getenv("AGENTMEM_HOST")


def start(env):
    env["AGENTMEM_PORT"] = "1"
    return os.environ.get("AGENTMEM_DATA_DIR"), os.environ.get("HOME")
"""
    assert settings_reads_at_import(source) == [5, 9, 12, 13]
    assert settings_handed_around(source) == [(13, "takes settings: Settings | None"), (14, "builds Settings()")]
    assert agentmem_variable_reads(source) == [(14, "AGENTMEM_PORT"), (14, "AGENTMEM_HOST"),
                                               (19, "AGENTMEM_DATA_DIR")]


def app_routes(routes) -> list:
    """Every route of the app, descending into included routers and mounts whatever their wrapper class."""
    found = []
    for route in routes:
        if isinstance(route, (APIRoute, APIWebSocketRoute)):
            found.append(route)
        included = getattr(route, "original_router", None)
        if included is not None:
            found.extend(app_routes(included.routes))
        elif getattr(route, "routes", None):
            found.extend(app_routes(route.routes))
    return found


@pytest.fixture(scope="module")
def app():
    from api.app import create_app

    return create_app()


def test_every_route_documents_itself(app):
    routes = app_routes(app.routes)
    assert len(routes) >= 10, f"expected the application's routes, found {[r.path for r in routes]}"
    undocumented = [f"{sorted(getattr(r, 'methods', None) or ['WEBSOCKET'])} {r.path_format}" for r in routes
                    if not (getattr(r, "description", None) or inspect.getdoc(r.endpoint) or "").strip()]
    assert not undocumented, "give these routes a docstring (it is their OpenAPI description):\n" + "\n".join(
        undocumented)


def test_every_openapi_operation_has_a_description(app):
    operations = [(method.upper(), path, op) for path, item in app.openapi()["paths"].items()
                  for method, op in item.items()]
    assert operations
    missing = [f"{method} {path}" for method, path, op in operations if not op.get("description", "").strip()]
    assert not missing, "OpenAPI operations without a description:\n" + "\n".join(missing)


# Features: one name in every layer where they appear (STYLE: a newcomer finds a feature by its name).
FEATURE_PACKAGES = {"accounts", "agents", "blocks", "conversations", "exports", "jobs", "llm", "maintenance", "mcp",
                    "memories", "schedules", "sources", "summaries", "tools", "webhooks"}
SHARED_PIPELINE_MODULES = {"pages.py", "splitting.py"}


def test_pipelines_are_feature_packages_plus_a_few_shared_modules():
    root = ROOT / "pipelines"
    packages = {p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.name for p in root.glob("*.py")} - {"__init__.py"}
    assert packages == FEATURE_PACKAGES
    assert modules == SHARED_PIPELINE_MODULES, "a new pipeline module belongs in its feature's package"


def test_each_pipelines_unit_test_sits_beside_its_module_name():
    tests = ROOT / "tests" / "unit" / "pipelines"
    for test in tests.rglob("test_*.py"):
        folder = test.parent.relative_to(tests)
        module = ROOT / "pipelines" / folder / test.name.removeprefix("test_")
        assert module.exists(), f"{relative(test)} tests no pipelines/{folder}/{module.name}"


@pytest.mark.parametrize("feature", ["agents", "blocks", "jobs", "llm", "memories", "schedules", "summaries",
                                     "tools"])
def test_a_feature_with_routes_has_the_same_name_in_api_routes(feature):
    assert (ROOT / "api" / "routes" / f"{feature}.py").exists()
