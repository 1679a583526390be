"""The units (the template of one instance per device among them) as systemd rates them
(`systemd-analyze security`); test_install.py verifies them installed."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.conftest import REPO

UNITS = ("ovembed.service", "ovembed-provision.service", "ovembed@.service")
INSTALLED = "/opt/ovembed"
OK_EXPOSURE = 2.5  # systemd's own "OK" band ends here

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")


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
