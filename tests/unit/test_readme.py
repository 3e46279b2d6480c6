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
