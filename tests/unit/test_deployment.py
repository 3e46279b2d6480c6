"""The deployment files run what they ship: docker-compose.yml, the Dockerfile and the Procfile call real
`agentmem` commands, the image installs the package as pyproject.toml declares it, and the package data
lists files that exist. No Docker engine is needed: the files are parsed, not run."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from cli.main import build_parser
from core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
OURS = {name: service for name, service in SERVICES.items() if "build" in service}  # built from this repo
DOCKERFILE = (ROOT / "Dockerfile").read_text()
# Instructions with their continuation lines joined.
INSTRUCTIONS = [line.strip() for line in re.sub(r"\\\n", " ", DOCKERFILE).splitlines()
                if line.strip() and not line.lstrip().startswith("#")]


def assert_real_command(argv: list[str], where: str) -> None:
    assert argv[0] == "agentmem", f"{where}: {argv} is not an agentmem command"
    try:
        build_parser().parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"{where}: `{shlex.join(argv)}` is not a command `agentmem` accepts")


def test_compose_defines_the_whole_system():
    assert {"postgres", "redis", "migrate", "api", "worker", "scheduler"} <= set(SERVICES)
    assert set(OURS) == {"migrate", "api", "worker", "scheduler"}
    for name, service in SERVICES.items():
        assert set(service.get("depends_on", {})) <= set(SERVICES), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith((".", "/")) or source in COMPOSE["volumes"], f"{name}: undeclared {source}"


@pytest.mark.parametrize("name", ["migrate", "api", "worker", "scheduler"])
def test_every_compose_service_runs_a_real_cli_command(name):
    assert_real_command(OURS[name]["command"], f"docker-compose.yml service {name}")


def test_compose_sets_only_real_settings():
    fields = {f"AGENTMEM_{name.upper()}" for name in Settings.model_fields}
    for name, service in OURS.items():
        unknown = {key for key in service["environment"] if key.startswith("AGENTMEM_")} - fields
        assert not unknown, f"{name} sets {unknown}, which no setting reads (core/settings.py)"


def test_workers_share_one_workspace_volume_at_the_configured_path():
    worker = SERVICES["worker"]
    path = worker["environment"]["AGENTMEM_TOOL_WORKSPACE_DIR"]
    mounts = dict(reversed(volume.split(":")[:2]) for volume in worker["volumes"])
    assert path in mounts, (f"the workers' workspace directory {path} is not on a volume: "
                            "files vanish with the container")
    assert mounts[path] in COMPOSE["volumes"], "a named volume, shared by every worker replica"


def test_the_api_sees_the_workers_workspaces_for_files_over_http():
    worker, api = SERVICES["worker"], SERVICES["api"]
    path = api["environment"]["AGENTMEM_TOOL_WORKSPACE_DIR"]
    assert path == worker["environment"]["AGENTMEM_TOOL_WORKSPACE_DIR"]
    mounts = dict(reversed(volume.split(":")[:2]) for volume in api.get("volumes", []))
    worker_mounts = dict(reversed(volume.split(":")[:2]) for volume in worker["volumes"])
    assert mounts.get(path) == worker_mounts[path], ("/api/v1/files reads and writes the workspaces the file "
                                                     "tools use: the api service needs the workers' volume")


def test_the_worker_may_make_the_sandbox_namespaces_and_nothing_else_may():
    # bwrap as root: CAP_SYS_ADMIN for the namespaces and mounts, CAP_NET_ADMIN to bring up the sandbox's
    # loopback; Docker's default seccomp profile has no pivot_root and its AppArmor profile denies mount.
    worker = SERVICES["worker"]
    assert {"SYS_ADMIN", "NET_ADMIN"} <= set(worker["cap_add"])
    assert {"seccomp=unconfined", "apparmor=unconfined"} <= set(worker["security_opt"])
    for name in ("migrate", "api", "scheduler"):
        assert "cap_add" not in SERVICES[name] and "security_opt" not in SERVICES[name], name


def test_procfile_runs_real_cli_commands():
    lines = [line for line in (ROOT / "Procfile").read_text().splitlines() if line.strip()]
    assert {line.split(":", 1)[0] for line in lines} == {"release", "web", "worker", "clock"}
    for line in lines:
        name, command = line.split(":", 1)
        command = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", command)  # ${PORT:-8000}: its default
        assert_real_command(shlex.split(command), f"Procfile {name}")


def test_the_image_runs_a_real_cli_command():
    [cmd] = [line for line in INSTRUCTIONS if line.startswith("CMD ")]
    assert_real_command(json.loads(cmd[4:]), "Dockerfile CMD")


def test_the_image_installs_the_package_from_pyproject_and_nothing_hand_copied():
    declared = {Requirement(r).name: Requirement(r) for r in PYPROJECT["project"]["dependencies"]}
    installs = [shlex.split(line[4:]) for line in INSTRUCTIONS if line.startswith("RUN ") and "pip install" in line]
    assert any(words[-1] == "." for words in installs), "the image must `pip install .` (pyproject.toml)"
    for words in installs:
        for word in words[words.index("install") + 1:]:
            if word == "." or word.startswith("-") or word.startswith("$"):
                continue
            pinned = Requirement(word)
            # Only a pin that pyproject.toml accepts (torch, installed first to choose the CPU build).
            assert pinned.name in declared, f"Dockerfile installs {word}, which pyproject.toml doesn't declare"
            [spec] = pinned.specifier
            assert declared[pinned.name].specifier.contains(spec.version), f"{word} vs {declared[pinned.name]}"
    copied = {source for line in INSTRUCTIONS if line.startswith("COPY ") for source in line.split()[1:-1]}
    packages = {pattern.rstrip("*") for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
    missing = (packages | {"pyproject.toml", "README.md"}) - copied
    assert not missing, f"Dockerfile doesn't copy {missing}: `pip install .` would build without them"


def test_the_image_has_node_for_javascript_tools():
    assert any(line.startswith("RUN ") and "apt-get install" in line and re.search(r"\bnodejs\b", line)
               for line in INSTRUCTIONS)


def test_package_data_lists_existing_files_and_every_migration_file():
    for package, patterns in PYPROJECT["tool"]["setuptools"]["package-data"].items():
        for pattern in patterns:
            assert list((ROOT / package).glob(pattern)), f"package data {package}/{pattern} matches no file"
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["core"]
    shipped = {path for pattern in patterns for path in (ROOT / "core").glob(pattern)}
    needed = {path for path in (ROOT / "core" / "migrations").rglob("*")
              if path.is_file() and "__pycache__" not in path.parts}
    assert not needed - shipped, f"not in the installed package: {sorted(str(p) for p in needed - shipped)}"


OBSERVABILITY = {"prometheus", "grafana", "jaeger"}
DASHBOARD = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "agentmem.json").read_text())


def test_the_observability_services_start_only_with_their_profile():
    assert OBSERVABILITY <= set(SERVICES)
    for name, service in SERVICES.items():
        if name in OBSERVABILITY:
            assert service.get("profiles") == ["observability"], f"{name} would start with a plain `up`"
        else:
            assert "profiles" not in service, f"{name} is part of the system: no profile"


def test_prometheus_scrapes_the_api_on_the_port_it_listens_on():
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = [t for job in config["scrape_configs"] for group in job["static_configs"] for t in group["targets"]]
    api_port = OURS["api"]["command"][OURS["api"]["command"].index("--port") + 1]
    assert targets == [f"api:{api_port}"]
    assert config["scrape_configs"][0].get("metrics_path", "/metrics") == "/metrics"
    mounted = {v.split(":")[1]: v.split(":")[0] for v in SERVICES["prometheus"]["volumes"] if v.startswith(".")}
    assert mounted["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus/prometheus.yml"


def test_grafana_is_provisioned_with_the_dashboard_and_the_prometheus_service():
    grafana = SERVICES["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"] if v.startswith(".")}
    for source in mounts.values():
        assert (ROOT / source).exists(), source
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/agentmem.yml").read_text())
    assert mounts[provider["providers"][0]["options"]["path"]] == "./deploy/grafana/dashboards"
    source = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    [datasource] = source["datasources"]
    assert datasource["url"] == "http://prometheus:9090" and "9090:9090" in SERVICES["prometheus"]["ports"]
    used = {t["datasource"]["uid"] for p in DASHBOARD["panels"] for t in p["targets"]}
    assert used == {datasource["uid"]}


def test_the_workers_and_api_export_traces_only_when_asked_and_jaeger_takes_otlp_http():
    environment = OURS["api"]["environment"]
    assert environment["OTEL_EXPORTER_OTLP_ENDPOINT"] == "${OTEL_EXPORTER_OTLP_ENDPOINT:-}"  # empty: tracing off
    assert "4318:4318" in SERVICES["jaeger"]["ports"]  # where `OTEL_EXPORTER_OTLP_ENDPOINT=http://jaeger:4318` goes


def exposed_metric_families() -> set[str]:
    """Every metric family /metrics shows (this process's and the scrape snapshot's), by name."""
    from prometheus_client.parser import text_string_to_metric_families

    from core.llm_metrics import LlmFigures
    from core.metrics import SnapshotCollector, render
    from core.work_metrics import WorkFigures

    body = render(SnapshotCollector([], [], {}, LlmFigures(), WorkFigures(), {})).decode()
    return {family.name for family in text_string_to_metric_families(body)}


def dashboard_metric_names() -> set[str]:
    """The metric names of every PromQL expression in the dashboard (functions, labels and keywords left out)."""
    names: set[str] = set()
    for panel in DASHBOARD["panels"]:
        for target in panel["targets"]:
            expr = re.sub(r"\{[^}]*\}", "", target["expr"])  # label matchers hold values, not metrics
            expr = re.sub(r"\[[^\]]*\]", "", expr)
            expr = re.sub(r"\b(by|without)\s*\([^)]*\)", "", expr)  # grouping labels
            names |= {name for name in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr) if name.startswith("agentmem_")}
    return names


def test_every_metric_the_dashboard_queries_exists_in_the_code():
    families = exposed_metric_families()
    assert "agentmem_llm_requests" in families and "agentmem_queue_wait_seconds" in families  # guards the parser
    names = dashboard_metric_names()
    assert len(names) >= 12
    missing = set()
    for name in names:
        base = re.sub(r"_(total|bucket|count|sum)$", "", name)
        if name not in families and base not in families:
            missing.add(name)
    assert not missing, f"the dashboard queries metrics /metrics never shows: {sorted(missing)}"


def test_the_metric_check_sees_a_misspelt_name():
    names = {"agentmem_llm_request_total", "agentmem_queue_depth"}
    families = exposed_metric_families()
    assert {n for n in names if n not in families and re.sub(r"_(total|bucket|count|sum)$", "", n) not in families} \
        == {"agentmem_llm_request_total"}
