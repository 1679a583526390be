"""scripts/install for real, into a prefix: the venv, the units (verified by systemd where it is present),
/etc/ovembed, a daemon that starts from it, a second run that keeps the operator's files, and an uninstall
that keeps models and settings."""

from __future__ import annotations

import ast
import os
import re
import shutil
import signal
import stat
import subprocess
from pathlib import Path

import httpx
import pytest

from daemon.config import Settings
from tests.conftest import REPO, daemon_env, free_port, wait_until_up
from tests.test_systemd import INSTALLED, UNITS

INSTALL = REPO / "scripts" / "install"
KEY_DROPIN = "api-key.conf"
# The executables the units start, relative to the install folder.
EXECUTABLES = (".venv/bin/ovembed", ".venv/bin/opt_in_out", "scripts/provision")


def _install(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")}
    done = subprocess.run(["bash", str(INSTALL), *args], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _serves(prefix: Path, root: Path, key_file: Path | None = None) -> None:
    """The installed ovembed answers, then exits 0 on SIGTERM as the unit expects; given the key file (where
    systemd's credential would be), it wants the key."""
    port = free_port()
    env = daemon_env(root / "models", port, **({"OVEMBED_API_KEY_FILE": str(key_file)} if key_file else {}))
    root.mkdir(parents=True, exist_ok=True)
    log = root / "daemon.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(prefix / "usr/local/bin/ovembed"), "serve"], env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_until_up(f"http://127.0.0.1:{port}", process, log)
        assert httpx.get(f"http://127.0.0.1:{port}/api/version", timeout=10).json()["version"]
        if key_file is not None:
            tags = f"http://127.0.0.1:{port}/api/tags"
            assert httpx.get(tags, timeout=10).status_code == 401
            bearer = {"Authorization": f"Bearer {key_file.read_text().strip()}"}
            assert httpx.get(tags, timeout=10, headers=bearer).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()


@pytest.fixture(scope="module")
def installed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One install under a prefix with an API key, for the tests that only read it, and what it printed."""
    prefix = tmp_path_factory.mktemp("install") / "root"
    return prefix, _install("--prefix", str(prefix), "--api-key").stdout


@pytest.fixture(scope="module")
def installed(installed_run: tuple[Path, str]) -> Path:
    return installed_run[0]


def test_what_the_units_start_is_where_they_look(installed: Path) -> None:
    opt = installed / "opt" / "ovembed"
    for executable in EXECUTABLES:
        assert os.access(opt / executable, os.X_OK), executable
    for unit in UNITS:
        assert (installed / "etc/systemd/system" / unit).read_text() == (REPO / "systemd" / unit).read_text()
    for name in ("ovembed.env", "models"):
        assert (installed / "etc/ovembed" / name).read_text() == (REPO / "systemd" / name).read_text()
    assert (installed / "usr/local/bin/ovembed").resolve() == (opt / ".venv/bin/ovembed").resolve()
    for unit in UNITS:  # --api-key: each unit reads the key as a credential
        dropin = installed / "etc/systemd/system" / f"{unit}.d" / KEY_DROPIN
        assert dropin.read_text() == (REPO / "systemd" / KEY_DROPIN).read_text()


def test_the_api_key_is_made_once_readable_by_its_owner_only_and_never_printed(
    installed_run: tuple[Path, str],
) -> None:
    prefix, printed = installed_run
    key_file = prefix / "etc/ovembed/api-key"
    key = key_file.read_text().strip()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", key)  # secrets.token_urlsafe(32)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key not in printed
    assert f"API key: in {key_file} (root only)" in printed
    # Again, as an upgrade would: the key is kept, the drop-ins too (the dry run shows it, touching nothing).
    again = _install("--prefix", str(prefix), "--dry-run").stdout
    units = prefix / "etc/systemd/system"
    assert f"+ install -D -m 0644 {REPO}/systemd/{KEY_DROPIN} {units}/ovembed.service.d/{KEY_DROPIN}" in again
    assert _install("--prefix", str(prefix), "--dry-run", "--api-key").stdout.count(f"keeping {key_file}") == 1
    assert key_file.read_text().strip() == key


def test_the_installed_daemon_serves_and_stops_as_the_unit_expects(installed: Path, tmp_path: Path) -> None:
    _serves(installed, tmp_path, key_file=installed / "etc/ovembed/api-key")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_installed_units_verify_with_the_installed_executables(installed: Path) -> None:
    """systemd-analyze checks that each Exec path exists; the prefix stands in for /."""
    units = installed / "etc/systemd/system"
    for unit in UNITS:
        text = (units / unit).read_text(encoding="utf-8")
        assert INSTALLED in text
        (units / unit).write_text(text.replace(INSTALLED, str(installed / "opt/ovembed")), encoding="utf-8")
    try:
        verified = subprocess.run(
            ["systemd-analyze", "verify", *UNITS], cwd=units, capture_output=True, text=True, timeout=60
        )
    finally:
        for unit in UNITS:
            shutil.copyfile(REPO / "systemd" / unit, units / unit)
    assert (verified.returncode, verified.stderr.strip()) == (0, ""), verified.stderr


def test_installing_again_keeps_the_operators_files_and_uninstalling_keeps_settings(tmp_path: Path) -> None:
    prefix = tmp_path / "root"
    opt = prefix / "opt" / "ovembed"
    etc = prefix / "etc" / "ovembed"
    first = _install("--prefix", str(prefix))
    assert not (etc / "api-key").exists() and "API key" not in first.stdout  # no key unless asked
    assert not list((prefix / "etc/systemd/system").glob("*.d"))
    (etc / "ovembed.env").write_text("OVEMBED_DEVICE=CPU\n")
    (etc / "models").write_text("nomic-embed-text\n")

    again = _install("--prefix", str(prefix))
    assert f"keeping {etc}/ovembed.env" in again.stdout and f"keeping {etc}/models" in again.stdout
    assert (etc / "ovembed.env").read_text() == "OVEMBED_DEVICE=CPU\n"
    assert (etc / "models").read_text() == "nomic-embed-text\n"
    _serves(prefix, tmp_path / "state")

    # A key made, then turned off: removing the file and installing again removes the drop-ins.
    (prefix / "etc/systemd/system/ovembed.service.d").mkdir()
    (prefix / "etc/systemd/system/ovembed.service.d" / KEY_DROPIN).write_text("[Service]\n")
    planned = _install("--prefix", str(prefix), "--dry-run").stdout
    assert f"+ rm -f {prefix}/etc/systemd/system/ovembed.service.d/{KEY_DROPIN}" in planned

    gone = _install("--prefix", str(prefix), "--uninstall")
    assert not (prefix / "etc/systemd/system/ovembed.service.d").exists()
    assert not opt.exists() and not (prefix / "usr/local/bin/ovembed").is_symlink()
    assert not any((prefix / "etc/systemd/system" / unit).exists() for unit in UNITS)
    assert (etc / "ovembed.env").read_text() == "OVEMBED_DEVICE=CPU\n"
    assert "Kept: the settings" in gone.stdout
    _install("--prefix", str(prefix), "--uninstall")  # and again: nothing left to remove is no error


def test_a_dry_run_prints_the_plan_and_touches_nothing(tmp_path: Path) -> None:
    prefix = tmp_path / "root"
    planned = _install("--prefix", str(prefix), "--dry-run").stdout
    assert f"+ {prefix}/opt/ovembed/.venv/bin/pip install --quiet --upgrade {REPO}" in planned
    assert f"+ install -m 0644 {REPO}/systemd/ovembed.service {prefix}/etc/systemd/system/ovembed.service" in planned
    assert not prefix.exists()


def _settings_read() -> dict[str, str | None]:
    """Each variable config.py reads, with the Settings field it fills directly (None when read otherwise)."""
    tree = ast.parse((REPO / "daemon" / "config.py").read_text())
    read: dict[str, str | None] = {}
    for node in ast.walk(tree):
        called = isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("_env", "_int_env")
        if called and isinstance(node.args[0], ast.Constant):  # not _int_env's own `_env(name)`
            read[str(node.args[0].value)] = None
    for node in ast.walk(tree):  # from_env's `field=_int_env("NAME", ...)` keywords
        if isinstance(node, ast.keyword) and isinstance(node.value, ast.Call) and node.value.args:
            first = node.value.args[0]
            if isinstance(first, ast.Constant) and first.value in read:
                read[str(first.value)] = node.arg
    return read


def test_the_env_file_and_the_readme_list_every_setting_with_its_default() -> None:
    env_file = (REPO / "systemd" / "ovembed.env").read_text()
    readme = (REPO / "README.md").read_text()
    listed = dict(re.findall(r"^#([A-Z_]+)=(.*)$", env_file, re.MULTILINE))
    defaults = Settings()
    read = _settings_read()
    assert len(read) >= 20
    for variable, field in read.items():
        assert variable in listed, f"{variable} is not in systemd/ovembed.env"
        assert f"| `{variable}` |" in readme, f"{variable} is not in README's Configuration table"
        default = getattr(defaults, field) if field else None
        if isinstance(default, int) and not isinstance(default, bool):
            assert listed[variable] == str(default), (variable, listed[variable], default)


def _nginx_accepts(site: Path, folder: Path) -> None:
    """`nginx -t` on an installed conf.d file, inside an nginx.conf whose paths are all in `folder`."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    main = folder / "nginx.conf"
    main.write_text(
        f"pid {folder}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        f"http {{ client_body_temp_path {folder}/body; proxy_temp_path {folder}/proxy; include {site}; }}\n"
    )
    checked = subprocess.run([nginx, "-t", "-p", str(folder), "-c", str(main), "-e", "stderr"], capture_output=True)
    assert checked.returncode == 0, checked.stderr.decode()


def test_instances_and_a_balancer_install_beside_one_store(tmp_path: Path) -> None:
    """--instances writes each instance's settings and the template; --balancer nginx (then haproxy) writes the
    shipped config with one server line per instance, which the real tool accepts; uninstall removes them and
    keeps the instances' settings."""
    prefix = tmp_path / "root"
    etc, units = prefix / "etc/ovembed", prefix / "etc/systemd/system"
    bad = subprocess.run(["bash", str(INSTALL), "--prefix", str(prefix), "--instances", "GPU.0"], capture_output=True)
    assert bad.returncode == 2 and b"not DEVICE:PORT" in bad.stderr
    done = _install("--prefix", str(prefix), "--instances", "GPU.0:11441,cpu-b=CPU:11442", "--balancer", "nginx")
    assert "enable ovembed@gpu0.service ovembed@cpu-b.service yourself" in done.stdout
    for name, device, port in (("gpu0", "GPU.0", 11441), ("cpu-b", "CPU", 11442)):
        settings = dict(re.findall(r"^([A-Z_]+)=(.*)$", (etc / f"ovembed@{name}.env").read_text(), re.MULTILINE))
        assert settings == {"OVEMBED_DEVICE": device, "OLLAMA_HOST": f"127.0.0.1:{port}"}
    assert (units / "ovembed@.service").read_text() == (REPO / "systemd/ovembed@.service").read_text()
    site = prefix / "etc/nginx/conf.d/ovembed.conf"
    assert re.findall(r"(?m)^    server 127\.0\.0\.1:(\d+) ", site.read_text()) == ["11441", "11442"]
    if shutil.which("nginx") or os.path.exists("/usr/sbin/nginx"):
        (tmp_path / "nginx").mkdir()
        _nginx_accepts(site, tmp_path / "nginx")
    if shutil.which("systemd-analyze"):  # an instance of the template, as systemd would load it
        text = (units / "ovembed@.service").read_text()
        (units / "ovembed@.service").write_text(text.replace(INSTALLED, str(prefix / "opt/ovembed")))
        verified = subprocess.run(
            ["systemd-analyze", "verify", "ovembed@gpu0.service"], cwd=units, capture_output=True, text=True
        )
        assert (verified.returncode, verified.stderr.strip()) == (0, ""), verified.stderr

    _install("--prefix", str(prefix), "--instances", "GPU.0:11441,GPU.1:11442", "--balancer", "haproxy")
    cfg = prefix / "etc/haproxy/ovembed.cfg"
    assert re.findall(r"(?m)^    server (\S+) 127\.0\.0\.1:(\d+)$", cfg.read_text()) == [
        ("gpu0", "11441"),
        ("gpu1", "11442"),
    ]
    dropin = units / "haproxy.service.d/ovembed.conf"
    assert "-f /etc/haproxy/ovembed.cfg" in dropin.read_text()
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if os.path.exists(haproxy):
        (tmp_path / "global.cfg").write_text("global\n    log stderr local0\n")
        checked = subprocess.run(
            [haproxy, "-c", "-f", str(tmp_path / "global.cfg"), "-f", str(cfg)], capture_output=True
        )
        assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()

    _install("--prefix", str(prefix), "--uninstall")
    assert not any(path.exists() for path in (site, cfg, dropin, units / "ovembed@.service"))
    assert (etc / "ovembed@gpu1.env").exists()
