"""The two units as systemd itself judges them: `systemd-analyze verify` and `security`. Skips without systemd."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

UNITS = ("ovembed.service", "ovembed-provision.service")
INSTALLED = "/opt/ovembed"
# The executables the units start, relative to the install folder.
EXECUTABLES = (".venv/bin/ovembed", ".venv/bin/opt_in_out", "scripts/provision")
OK_EXPOSURE = 2.5  # systemd's own "OK" band ends here

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")


def test_both_units_verify_with_their_executables_in_place(tmp_path: Path) -> None:
    """The install folder is played by a temporary one holding stand-in executables."""
    installed = tmp_path / "opt" / "ovembed"
    for executable in EXECUTABLES:
        path = installed / executable
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    units = tmp_path / "units"
    units.mkdir()
    for unit in UNITS:
        text = (REPO / "systemd" / unit).read_text(encoding="utf-8")
        assert INSTALLED in text
        (units / unit).write_text(text.replace(INSTALLED, str(installed)), encoding="utf-8")
    verified = subprocess.run(
        ["systemd-analyze", "verify", *UNITS], cwd=units, capture_output=True, text=True, timeout=60
    )
    assert (verified.returncode, verified.stderr.strip()) == (0, ""), verified.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_each_unit_is_rated_ok_by_systemd_analyze_security(unit: str) -> None:
    rated = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(REPO / "systemd" / unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: ([\d.]+)", rated.stdout + rated.stderr)
    assert found is not None, rated.stdout + rated.stderr
    assert float(found.group(1)) <= OK_EXPOSURE, rated.stdout
