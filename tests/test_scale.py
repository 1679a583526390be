"""Scaling out: several daemons on one store (a pull on one is served by the others, two pulls of one model
download it once), and deploy/nginx/ovembed.conf, run by the real nginx in front of real daemons that are
stopped, killed and started again while clients embed without seeing an error."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import REPO, Daemon, free_port, start_daemon, stop_daemon, store_models, wait_for
from tests.fakehub import FakeHub, running_hub
from tests.tinymodel import build_tiny_model

NGINX_CONF = REPO / "deploy" / "nginx" / "ovembed.conf"
TEXTS = [f"text number {i} for the balancer" for i in range(8)]
CLIENTS = 24
PHASE = 150  # requests answered between two events of the balancer test


# ---------------------------------------------------------------------------------------------- one store


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> FakeHub:
    fake = FakeHub()
    folder = build_tiny_model(tmp_path_factory.mktemp("scale-hub") / "tiny")
    for repo in ("ovembed-test/seen-by-all", "ovembed-test/pulled-twice"):
        fake.add_repo(repo, folder)
    return fake


@pytest.fixture(scope="module")
def hub_url(hub: FakeHub) -> Iterator[str]:
    with running_hub(hub) as url:
        yield url


@contextlib.contextmanager
def daemons_on_one_store(root: Path, count: int, **env: str) -> Iterator[list[Daemon]]:
    """`count` daemons with one OVEMBED_MODELS (and compile cache), as instances of ovembed@.service share
    /var/lib/ovembed; each its own port, log and hub cache."""
    running: list[Daemon] = []
    try:
        for _ in range(count):
            running.append(start_daemon(root, OVEMBED_PRECISION="fp32", **env))
        yield running
    finally:
        for daemon in running:
            stop_daemon(daemon)


def file_gets(hub: FakeHub, repo: str) -> Counter[str]:
    """How often each file of `repo` was downloaded, by its path in the repo."""
    prefix = f"/{repo}/resolve/"
    return Counter(path[len(prefix) :].split("/", 1)[1] for path in hub.resolve_gets() if path.startswith(prefix))


def pull(daemon: Daemon, name: str) -> httpx.Response:
    return httpx.post(f"{daemon.url}/api/pull", json={"model": name, "stream": False}, timeout=120)


def embed(url: str, model: str, texts: list[str], client: httpx.Client | None = None) -> httpx.Response:
    body = {"model": model, "input": texts}
    if client is not None:
        return client.post(f"{url}/api/embed", json=body)
    return httpx.post(f"{url}/api/embed", json=body, timeout=60)


def test_a_model_pulled_on_one_daemon_is_served_by_the_other(tmp_path: Path, hub_url: str, hub: FakeHub) -> None:
    """The store reads a manifest again when it changes: the second daemon finds the model on its next
    request, without a restart, and embeds as the first does."""
    name = "hf.co/ovembed-test/seen-by-all"
    with daemons_on_one_store(tmp_path, 2, HF_ENDPOINT=hub_url, HF_HUB_OFFLINE="0", HF_TOKEN="") as (one, two):
        assert embed(two.url, name, TEXTS).status_code == 404
        answer = pull(one, name)
        assert (answer.status_code, answer.json()) == (200, {"status": "success"})
        there, here = embed(two.url, name, TEXTS), embed(one.url, name, TEXTS)
        assert there.status_code == here.status_code == 200, there.text
        np.testing.assert_allclose(there.json()["embeddings"], here.json()["embeddings"], atol=1e-6)
        assert name + ":latest" in {m["name"] for m in httpx.get(f"{two.url}/api/tags").json()["models"]}


def test_one_model_pulled_on_two_daemons_at_once_is_downloaded_once(tmp_path: Path, hub_url: str, hub: FakeHub) -> None:
    """The download's file lock meets the pulls of both processes: one downloads and converts, the other
    waits for it and finds the model stored."""
    repo = "ovembed-test/pulled-twice"
    network = "onnx/model.onnx"
    hub.slow(network, 40_000)  # the first download lasts while the second pull arrives
    try:
        with (
            daemons_on_one_store(tmp_path, 2, HF_ENDPOINT=hub_url, HF_HUB_OFFLINE="0", HF_TOKEN="") as both,
            ThreadPoolExecutor(max_workers=2) as pool,
        ):
            pulls = [pool.submit(pull, daemon, f"hf.co/{repo}") for daemon in both]
            wait_for(lambda: file_gets(hub, repo)[network] == 1, "the network's download")
            assert not any(p.done() for p in pulls), "a pull ended before the download did; slow the hub more"
            answers = [p.result() for p in pulls]
            assert [(a.status_code, a.json()) for a in answers] == [(200, {"status": "success"})] * 2
            for daemon in both:
                assert embed(daemon.url, f"hf.co/{repo}", TEXTS).status_code == 200
    finally:
        hub.clear_faults()
    gets = file_gets(hub, repo)
    assert gets[network] == 1 and set(gets.values()) == {1}, gets


# ---------------------------------------------------------------------------------------------- nginx


def with_servers(shipped: Path, servers: list[str]) -> str:
    """A shipped balancer config with its block of `server ... 127.0.0.1:PORT` lines replaced, as
    scripts/install replaces it: the tests run what an install writes."""
    block = "".join(f"    {line}\n" for line in servers)
    site, count = re.subn(r"(?m)^(    server .*127\.0\.0\.1:\d+.*\n)+", lambda _: block, shipped.read_text())
    assert count == 1, f"{shipped}'s server lines moved; scripts/install rewrites them too"
    return site


def nginx_config(folder: Path, listen: int, upstreams: list[int]) -> Path:
    """deploy/nginx/ovembed.conf as scripts/install writes it (its `server` lines from the instances), inside
    an nginx.conf for an unprivileged nginx whose files all live in `folder`; an access log naming the node
    (or nodes, after a retry) that answered each request."""
    servers = [f"server 127.0.0.1:{port} max_fails=1 fail_timeout=5s;" for port in upstreams]
    site = with_servers(NGINX_CONF, servers)
    site = site.replace("listen 127.0.0.1:11434;", f"listen 127.0.0.1:{listen};")
    (folder / "ovembed.conf").write_text(site)
    main = folder / "nginx.conf"
    main.write_text(
        f"""daemon off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log stderr notice;
events {{ worker_connections 1024; }}
http {{
    log_format upstreams '$status|$upstream_addr|$upstream_status';
    access_log {folder}/access.log upstreams;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    include {folder}/ovembed.conf;
}}
"""
    )
    return main


@contextlib.contextmanager
def running_nginx(folder: Path, listen: int, upstreams: list[int]) -> Iterator[str]:
    """The real nginx, unprivileged, in the foreground, in front of `upstreams`."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    main = nginx_config(folder, listen, upstreams)
    check = subprocess.run([nginx, "-t", "-p", str(folder), "-c", str(main), "-e", "stderr"], capture_output=True)
    assert check.returncode == 0, check.stderr.decode()
    with foreground([nginx, "-p", str(folder), "-c", str(main), "-e", "stderr"], folder / "nginx.log") as process:

        def up() -> bool:
            with contextlib.suppress(httpx.TransportError):
                return process.poll() is None and httpx.get(f"http://127.0.0.1:{listen}/", timeout=2).status_code == 200
            return False

        wait_for(up, "nginx answering")
        yield f"http://127.0.0.1:{listen}"


@contextlib.contextmanager
def foreground(command: list[str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A balancer in the foreground, its output in `log_path`; a graceful stop after, a kill if that hangs."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
        assert process.poll() is None, log_path.read_text()
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Clients:
    """Threads embedding through the balancer until told to stop; every answer is held to the vectors one
    daemon gave directly."""

    url: str
    expected: np.ndarray
    stop: threading.Event = field(default_factory=threading.Event)
    answered: int = 0
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, index: int) -> None:
        rows = [index % len(TEXTS), (index + 3) % len(TEXTS)]
        texts = [TEXTS[row] for row in rows]
        with httpx.Client(timeout=60) as client:
            while not self.stop.is_set():
                try:
                    answer = embed(self.url, "tiny", texts, client)
                    failure = None if answer.status_code == 200 else f"{answer.status_code} {answer.text}"
                    if failure is None and not np.allclose(answer.json()["embeddings"], self.expected[rows], atol=1e-5):
                        failure = "wrong vectors"
                except httpx.HTTPError as error:
                    failure = repr(error)
                with self.lock:
                    self.answered += 1
                    if failure is not None:
                        self.failures.append(failure)

    @contextlib.contextmanager
    def embedding(self) -> Iterator[None]:
        """CLIENTS threads running until the block ends; a client's exception is raised here."""
        with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
            runs = [pool.submit(self.run, i) for i in range(CLIENTS)]
            try:
                yield
            finally:
                self.stop.set()
                for run in runs:
                    run.result()

    def after(self, count: int, what: str) -> None:
        """Wait until `count` more requests were answered than now."""
        target = self.answered + count
        wait_for(lambda: self.answered >= target, what, timeout=300)


def start_node(store: Path, port: int) -> Daemon:
    """A balanced node: fp32 as the vectors expected, its model loaded before it listens."""
    return start_daemon(store, port, OVEMBED_PRECISION="fp32", OVEMBED_PRELOAD="tiny")


def embeds_answered(daemon: Daemon) -> float:
    response = httpx.get(f"{daemon.url}/metrics", timeout=10)
    found = re.search(r'ovembed_requests_total\{route="/api/embed",status="200"\} ([\d.e+]+)', response.text)
    return float(found.group(1)) if found else 0.0


@pytest.mark.skipif(shutil.which("nginx") is None and not os.path.exists("/usr/sbin/nginx"), reason="needs nginx")
def test_nginx_keeps_answering_while_nodes_stop_die_and_come_back(tmp_path: Path, tiny_dir: Path) -> None:
    """Three daemons behind the shipped nginx config, 24 clients embedding throughout: one node stopped with
    SIGTERM, another killed with SIGKILL, the first started again. Every request is answered 200 with the
    right vectors (nginx retries a refused, reset or 503 request on the next node) and the restarted node
    takes its share again once nginx's fail_timeout has passed."""
    store = tmp_path / "store"
    store_models(store, {"tiny": tiny_dir})
    ports = [free_port() for _ in range(3)]
    nodes = [start_node(store, port) for port in ports]
    restarted: Daemon | None = None
    (tmp_path / "nginx").mkdir()
    try:
        direct = embed(nodes[0].url, "tiny", TEXTS)
        expected = np.array(direct.json()["embeddings"])
        with running_nginx(tmp_path / "nginx", free_port(), ports) as url:
            clients = Clients(url, expected)
            with clients.embedding():
                clients.after(PHASE, "requests with all three nodes up")
                nodes[0].process.send_signal(signal.SIGTERM)
                assert nodes[0].process.wait(timeout=30) == 0
                clients.after(PHASE, "requests after the SIGTERM")
                nodes[1].process.kill()
                nodes[1].process.wait(timeout=30)
                clients.after(PHASE, "requests after the SIGKILL")
                back = restarted = start_node(store, ports[0])
                wait_for(lambda: embeds_answered(back) >= 10, "the restarted node back in rotation", 120)
                back_at = len((tmp_path / "nginx" / "access.log").read_text().splitlines())
                clients.after(4 * PHASE, "requests after the restart")
        lines = (tmp_path / "nginx" / "access.log").read_text().splitlines()
    finally:
        for node in [*nodes, *([restarted] if restarted else [])]:
            stop_daemon(node)
    # Which node answered: the last address of $upstream_addr (earlier ones failed and were retried).
    fields = [line.split("|") for line in lines]
    answered_by = Counter(addresses.split(", ")[-1] for _, addresses, _ in fields)
    retried = sum(1 for _, addresses, _ in fields if ", " in addresses)
    share = {port: answered_by[f"127.0.0.1:{port}"] for port in ports}
    last = Counter(addresses.split(", ")[-1] for _, addresses, _ in fields[back_at:])
    print(f"\nnginx: {clients.answered} requests, {len(clients.failures)} errors, {retried} retried by nginx")
    print("per node (port: answered):", share, "of", len(lines), "in nginx's access log")
    print("after the restart, the two live nodes:", {port: last[f"127.0.0.1:{port}"] for port in ports})
    assert clients.failures == [], Counter(clients.failures).most_common(5)
    assert {status for status, _, _ in fields} == {"200"}, [line for line in lines if not line.startswith("200|")]
    assert all(share.values()), share


# ---------------------------------------------------------------------------------------------- HAProxy

HAPROXY_CFG = REPO / "deploy" / "haproxy" / "ovembed.cfg"


def haproxy_config(folder: Path, listen: int, upstreams: list[int]) -> list[Path]:
    """deploy/haproxy/ovembed.cfg with its `server` lines and bind set, behind a global section of an
    unprivileged HAProxy whose admin socket lives in `folder`."""
    site = with_servers(HAPROXY_CFG, [f"server node{port} 127.0.0.1:{port}" for port in upstreams])
    site = site.replace("bind 127.0.0.1:11434", f"bind 127.0.0.1:{listen}")
    (folder / "ovembed.cfg").write_text(site)
    (folder / "global.cfg").write_text(f"global\n    stats socket {folder}/admin.sock mode 600 level admin\n")
    return [folder / "global.cfg", folder / "ovembed.cfg"]


def server_states(folder: Path) -> dict[int, str]:
    """Each server's state as HAProxy's checks see it (UP, DOWN, and the steps between), by port."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(folder / "admin.sock"))
        sock.sendall(b"show stat\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    rows = [line.split(",") for line in data.decode().splitlines() if line and not line.startswith("#")]
    return {int(row[1].removeprefix("node")): row[17] for row in rows if row[1].startswith("node")}


@contextlib.contextmanager
def running_haproxy(folder: Path, listen: int, upstreams: list[int]) -> Iterator[str]:
    """The real HAProxy, unprivileged, in the foreground, in front of `upstreams`, until every server is UP."""
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    files = [arg for cfg in haproxy_config(folder, listen, upstreams) for arg in ("-f", str(cfg))]
    check = subprocess.run([haproxy, "-c", *files], capture_output=True)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    with foreground([haproxy, "-db", *files], folder / "haproxy.log") as process:

        def up() -> bool:
            with contextlib.suppress(OSError):
                return process.poll() is None and set(server_states(folder).values()) == {"UP"}
            return False

        wait_for(up, "HAProxy up with every server UP")
        yield f"http://127.0.0.1:{listen}"


@pytest.mark.skipif(shutil.which("haproxy") is None and not os.path.exists("/usr/sbin/haproxy"), reason="needs haproxy")
def test_haproxy_sends_a_restarted_node_nothing_before_its_check_passes(tmp_path: Path, tiny_dir: Path) -> None:
    """Two daemons behind the shipped HAProxy config, clients embedding throughout; one is stopped, then started
    again. While HAProxy still counts it down, it has answered no embedding; once its checks pass it takes
    its share; no client sees an error."""
    store = tmp_path / "store"
    store_models(store, {"tiny": tiny_dir})
    ports = [free_port() for _ in range(2)]
    nodes = [start_node(store, port) for port in ports]
    restarted: Daemon | None = None
    folder = tmp_path / "haproxy"
    folder.mkdir()
    samples: list[tuple[str, float, str]] = []
    try:
        expected = np.array(embed(nodes[0].url, "tiny", TEXTS).json()["embeddings"])
        with running_haproxy(folder, free_port(), ports) as url:
            clients = Clients(url, expected)
            with clients.embedding():
                clients.after(PHASE, "requests with both nodes up")
                nodes[0].process.send_signal(signal.SIGTERM)
                assert nodes[0].process.wait(timeout=30) == 0
                wait_for(lambda: server_states(folder)[ports[0]].startswith("DOWN"), "HAProxy counting it down")
                clients.after(PHASE, "requests with one node down")
                back = restarted = start_node(store, ports[0])

                def sampled_up() -> bool:
                    before = server_states(folder)[ports[0]]
                    answered = embeds_answered(back)
                    samples.append((before, answered, server_states(folder)[ports[0]]))
                    return samples[-1][2] == "UP"

                wait_for(sampled_up, "HAProxy's checks passing on the restarted node")
                wait_for(lambda: embeds_answered(back) >= 10, "the restarted node taking requests", 120)
                clients.after(PHASE, "requests after the restart")
    finally:
        for node in [*nodes, *([restarted] if restarted else [])]:
            stop_daemon(node)
    down = [answered for before, answered, after in samples if before != "UP" and after != "UP"]
    print(f"\nhaproxy: {clients.answered} requests, {len(clients.failures)} errors; restarted node sampled")
    print(f"{len(down)} times while not yet UP, answered {max(down, default=0):.0f} embeddings then")
    assert clients.failures == [], Counter(clients.failures).most_common(5)
    assert down, samples  # seen listening but not yet UP at least once (rise 3: three checks a second apart)
    assert set(down) == {0.0}, samples
