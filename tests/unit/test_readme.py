"""The README documents every setting, with the default the code actually uses."""

import re
from pathlib import Path

from core.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_configuration_table_lists_every_setting_with_its_default():
    rows = dict(re.findall(r"^\| `AGENTMEM_([A-Z0-9_]+)` \| ([^|]+) \|", README.read_text(), flags=re.M))
    fields = {name.upper(): field.default for name, field in Settings.model_fields.items()}
    assert set(rows) == set(fields)
    for name, default in fields.items():
        documented = rows[name].strip()
        expected = "unset" if default is None else f"`{default}`"
        assert documented == expected, f"AGENTMEM_{name}: README says {documented}, code says {expected}"


LAYOUT_ROOTS = ("agentmem", "api", "workers", "pipelines", "schemas", "core", "cli", "bench")


def layout_lines() -> dict[str, set[str]]:
    """The README's Layout block as {folder: the modules its line names}."""
    block = README.read_text().split("## Layout", 1)[1].split("```", 2)[1]
    return {line.split()[0].rstrip("/"): set(re.findall(r"\b([a-z0-9_]+\.py)\b", line))
            for line in block.strip().splitlines()}


def source_folders() -> dict[str, set[str]]:
    """{folder: its modules} for every source folder, __init__.py and migration versions left out."""
    root = README.parent
    found: dict[str, set[str]] = {}
    for top in LAYOUT_ROOTS:
        for path in (root / top).rglob("*.py"):
            folder = path.parent.relative_to(root).as_posix()
            if "__pycache__" in path.parts or folder.endswith("migrations/versions"):
                continue
            found.setdefault(folder, set())
            if path.name != "__init__.py":
                found[folder].add(path.name)
    return found


def test_layout_names_every_module_in_its_folder_and_nothing_else():
    documented, actual = layout_lines(), source_folders()
    assert set(actual) <= set(documented), f"folders missing from the README's Layout: {set(actual) - set(documented)}"
    for folder, modules in actual.items():
        assert documented[folder] == modules, (f"{folder}/: missing {sorted(modules - documented[folder])}, "
                                               f"gone {sorted(documented[folder] - modules)}")
