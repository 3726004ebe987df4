"""A class on JupyterHub: hub/jupyterhub_config.py serves five students at once.

The hub starts as `make hub` starts it (the same config file), on 127.0.0.1 and free ports, with JupyterHub's
DummyAuthenticator and SimpleLocalProcessSpawner (no Unix accounts needed) and an admin API token. Through the
REST API the test creates five students and starts their servers; each server opens its own copy of the course.
Then, concurrently, it reads `00_welcome.ipynb` from each student's server and runs every code cell in order in a
kernel of that server, through the kernel websocket, as JupyterLab would. It checks that every cell replied "ok",
measures each student's memory (their server and its kernels, with psutil) and writes the numbers to
build/test-artifacts/hub-memory.json. The hub, the proxy, the idle culler, the servers and their kernels are stopped
by process id at the end, and the test fails if any of them is still running.

Needs jupyterhub (pip, pinned in constraints.txt and the `test` extra) and configurable-http-proxy (npm, pinned in
hub/package.json); without either it skips with the command that installs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

import nbformat
import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "build" / "test-artifacts"
CONFIG = ROOT / "hub" / "jupyterhub_config.py"
NOTEBOOK = "00_welcome.ipynb"
STUDENTS = [f"student{i}" for i in range(1, 6)]
CHP = ROOT / "hub" / "node_modules" / ".bin" / "configurable-http-proxy"
MEM_LIMIT = 3 * 1024**3            # what the config sets (PHI4LAB_HUB_MEM_LIMIT unset): "3G"


def _pins(*names):
    pins = {line.split("==")[0].lower(): line.strip() for line in (ROOT / "constraints.txt").read_text().splitlines()
            if "==" in line and not line.startswith("#")}
    return " ".join(pins.get(n, n) for n in names)


_missing_hub = [m for m in ("jupyterhub", "jupyterhub_idle_culler") if importlib.util.find_spec(m) is None]
_chp = CHP if CHP.exists() else shutil.which("configurable-http-proxy")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(_missing_hub), reason=f"needs {', '.join(_missing_hub)}: .venv/bin/pip install -c "
                       f"constraints.txt {_pins('jupyterhub', 'jupyterhub-idle-culler')}"),
    pytest.mark.skipif(_chp is None, reason="needs configurable-http-proxy: npm ci --prefix hub"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _private_and_shared(procs) -> tuple[int, int]:
    """USS (pages only these processes hold) and PSS (their fair share of the pages they share, such as torch's
    libraries, mapped once for every kernel on the machine), summed."""
    uss = pss = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            info = p.memory_full_info()
            uss, pss = uss + info.uss, pss + getattr(info, "pss", 0)
    return uss, pss


def _rss(procs) -> int:
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += p.memory_info().rss
    return total


class Hub:
    """The hub's process and every process it started that the test has seen (kept to check they all stop)."""

    def __init__(self, url, token, process, log):
        self.url, self.token, self.process, self.log = url, token, process, log
        self.root = psutil.Process(process.pid)
        self.seen: dict[int, psutil.Process] = {process.pid: self.root}

    def remember(self):
        for p in _tree(self.root):
            self.seen.setdefault(p.pid, p)

    def server_of(self, name: str) -> psutil.Process:
        """The single-user server the hub spawned for `name` (a child of the hub with JUPYTERHUB_USER=name)."""
        for p in self.root.children():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                if p.environ().get("JUPYTERHUB_USER") == name:
                    return p
        raise AssertionError(f"no server process for {name} among the hub's children")


@contextlib.contextmanager
def running_hub(tmp: Path):
    token = secrets.token_hex(32)
    port = _free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PHI4LAB_HUB_IP="127.0.0.1", PHI4LAB_HUB_PORT=str(port),
               PHI4LAB_HUB_API_PORT=str(_free_port()), PHI4LAB_HUB_PROXY_API_PORT=str(_free_port()),
               PHI4LAB_HUB_STATE=str(tmp / "state"), PHI4LAB_HUB_HOMES=str(tmp / "homes" / "{username}"),
               PHI4LAB_HUB_AUTHENTICATOR="dummy", PHI4LAB_HUB_SPAWNER="simple", PHI4LAB_HUB_ADMIN_TOKEN=token)
    for name in ("MEM_LIMIT", "COURSE"):                     # the config's defaults, as `make hub` runs it
        env.pop(f"PHI4LAB_HUB_{name}", None)
    if _chp != CHP:
        env["PATH"] = f"{Path(_chp).parent}{os.pathsep}{env['PATH']}"
    log = open(tmp / "jupyterhub.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(CONFIG)], cwd=tmp,
                               stdout=log, stderr=subprocess.STDOUT, env=env)
    hub = Hub(f"http://127.0.0.1:{port}", token, process, log)
    try:
        yield hub
    finally:
        hub.remember()
        process.terminate()                                 # SIGTERM: the hub stops the servers, proxy and culler
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        _gone, alive = psutil.wait_procs([p for p in hub.seen.values() if p.pid != process.pid], timeout=15)
        hub.strays = []
        for p in alive:                                       # leave nothing behind, by process id
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                if _alive(p):
                    hub.strays.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
                p.kill()
        log.close()


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# --- the REST and websocket clients ----------------------------------------------------------------------------

async def _api(hub: Hub, method: str, path: str, body=None, ok=(200, 201, 202, 204)):
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest
    request = HTTPRequest(hub.url + path, method=method, headers={"Authorization": f"token {hub.token}"},
                          body=None if body is None else json.dumps(body), allow_nonstandard_methods=True,
                          request_timeout=120)
    response = await AsyncHTTPClient().fetch(request, raise_error=False)
    assert response.code in ok, f"{method} {path}: {response.code} {response.body[:500]!r}"
    return json.loads(response.body) if response.body else None


def _decode(frame) -> dict:
    """A kernel message from the websocket: JSON text, or (when it carries buffers) the binary framing whose first
    part is the JSON message."""
    if isinstance(frame, str):
        return json.loads(frame)
    n = struct.unpack("!I", frame[:4])[0]
    offsets = struct.unpack(f"!{n}I", frame[4:4 + 4 * n])
    end = offsets[1] if n > 1 else len(frame)
    return json.loads(frame[offsets[0]:end].decode())


async def _run_notebook(hub: Hub, name: str, cell_timeout: float = 900) -> dict:
    """Read the notebook from the student's server, start a kernel there, run every code cell in order."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    base = f"/user/{name}/api"
    model = await _api(hub, "GET", f"{base}/contents/{NOTEBOOK}?content=1")
    notebook = nbformat.from_dict(model["content"])
    cells = [c.source for c in notebook.cells if c.cell_type == "code"]
    kernel = await _api(hub, "POST", f"{base}/kernels", {"name": notebook.metadata.kernelspec.name})
    session = uuid.uuid4().hex
    ws_url = hub.url.replace("http", "ws", 1) + f"{base}/kernels/{kernel['id']}/channels?session_id={session}"
    ws = await websocket_connect(HTTPRequest(ws_url, headers={"Authorization": f"token {hub.token}"},
                                             request_timeout=120), max_message_size=256 * 1024**2)
    replies, errors, started = [], [], time.perf_counter()
    try:
        for index, code in enumerate(cells):
            msg_id = uuid.uuid4().hex
            await ws.write_message(json.dumps({
                "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": name, "session": session,
                           "date": "", "version": "5.3"},
                "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                            "allow_stdin": False, "stop_on_error": True}}))
            reply, idle = None, False
            deadline = time.monotonic() + cell_timeout
            while reply is None or not idle:                  # the reply, and iopub's "idle" after the outputs
                frame = await asyncio.wait_for(ws.read_message(), timeout=max(1.0, deadline - time.monotonic()))
                assert frame is not None, f"{name}: the kernel websocket closed during cell {index}"
                msg = _decode(frame)
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = msg["header"]["msg_type"]
                if kind == "execute_reply":
                    reply = msg["content"]
                elif kind == "error":
                    errors.append(f"cell {index}: {msg['content']['ename']}: {msg['content']['evalue']}")
                elif kind == "status" and msg["content"]["execution_state"] == "idle":
                    idle = True
            replies.append(reply["status"])
            if reply["status"] != "ok":
                error = f"cell {index}: {reply.get('ename')}: {reply.get('evalue')}"
                if error not in errors:                       # iopub's "error" already said it, as a rule
                    errors.append(error)
                break
    finally:
        ws.close()
    return dict(kernel=kernel["name"], cells=len(cells), replies=replies, errors=errors,
                run_s=round(time.perf_counter() - started, 1))


async def _class(hub: Hub) -> dict:
    # the hub answers through the proxy
    for _ in range(240):
        with contextlib.suppress(Exception):
            await _api(hub, "GET", "/hub/api/")
            break
        assert hub.process.poll() is None, f"jupyterhub exited with {hub.process.returncode}; see {hub.log.name}"
        await asyncio.sleep(0.5)
    else:
        raise AssertionError(f"the hub did not answer within 120 s; see {hub.log.name}")
    services = set(await _api(hub, "GET", "/hub/api/services"))          # a dict by service name
    assert {"idle-culler", "phi4lab-admin"} <= services

    created = await _api(hub, "POST", "/hub/api/users", {"usernames": STUDENTS})
    assert sorted(u["name"] for u in created) == STUDENTS
    t0 = time.perf_counter()
    await asyncio.gather(*(_api(hub, "POST", f"/hub/api/users/{n}/server") for n in STUDENTS))
    for _ in range(600):
        users = {u["name"]: u for u in await _api(hub, "GET", "/hub/api/users")}
        if all(users[n]["servers"].get("", {}).get("ready") for n in STUDENTS):
            break
        await asyncio.sleep(0.5)
    else:
        raise AssertionError(f"not every server became ready within 300 s; see {hub.log.name}")
    spawn_s = time.perf_counter() - t0

    servers = {n: hub.server_of(n) for n in STUDENTS}
    threads = servers[STUDENTS[0]].environ().get("OMP_NUM_THREADS", "all")
    for name, server in servers.items():
        assert int(server.environ()["MEM_LIMIT"]) == MEM_LIMIT, "the config's mem_limit did not reach the server"
        folder = await _api(hub, "GET", f"/user/{name}/api/contents")
        assert NOTEBOOK in {f["name"] for f in folder["content"]}, f"{name}'s server does not open the course"
    hub.remember()

    # sample every student's server + kernels while the five notebooks run at once
    peaks = dict.fromkeys(STUDENTS, 0)
    done = asyncio.Event()

    async def sample():
        while not done.is_set():
            hub.remember()
            for n, server in servers.items():
                peaks[n] = max(peaks[n], _rss(_tree(server)))
            await asyncio.sleep(0.25)

    sampler = asyncio.create_task(sample())
    t0 = time.perf_counter()
    try:
        runs = dict(zip(STUDENTS, await asyncio.gather(*(_run_notebook(hub, n) for n in STUDENTS)), strict=True))
    finally:
        done.set()
        await sampler
    concurrent_s = time.perf_counter() - t0

    for n, server in servers.items():
        tree = _tree(server)
        uss, pss = _private_and_shared(tree)
        runs[n].update(processes=len(tree), peak_rss_mib=round(peaks[n] / 2**20),
                       final_rss_mib=round(_rss(tree) / 2**20), final_server_rss_mib=round(_rss([server]) / 2**20),
                       final_kernels_rss_mib=round(_rss(tree[1:]) / 2**20),
                       final_uss_mib=round(uss / 2**20), final_pss_mib=round(pss / 2**20))
    others = [p for p in _tree(hub.root) if not any(p in _tree(s) for s in servers.values())]
    result = dict(notebook=NOTEBOOK, students=runs, spawn_all_s=round(spawn_s, 1),
                  concurrent_run_s=round(concurrent_s, 1), mem_limit_bytes=MEM_LIMIT,
                  kernel_threads=threads,
                  hub_proxy_culler_rss_mib=round(_rss(others) / 2**20), cpu_count=os.cpu_count(),
                  total_memory_gib=round(psutil.virtual_memory().total / 2**30, 2))

    # stop the servers as an admin would (the hub stops the rest on exit)
    await asyncio.gather(*(_api(hub, "DELETE", f"/hub/api/users/{n}/server") for n in STUDENTS))
    return result


def test_hub_serves_five_students_running_notebook_00_at_once(tmp_path, capsys):
    started = time.perf_counter()
    with running_hub(tmp_path) as hub:
        result = asyncio.run(_class(hub))
    result["test_wall_s"] = round(time.perf_counter() - started, 1)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "hub-memory.json").write_text(json.dumps(result, indent=2) + "\n")
    with capsys.disabled():
        print(f"\n{NOTEBOOK} in 5 students' kernels at once ({result['kernel_threads']} thread(s) each): "
              f"{result['concurrent_run_s']} s "
              f"(servers started in {result['spawn_all_s']} s; hub + proxy + culler "
              f"{result['hub_proxy_culler_rss_mib']} MiB RSS; test {result['test_wall_s']} s)")
        for n, r in result["students"].items():
            print(f"  {n}: server + kernel peak {r['peak_rss_mib']} MiB RSS; final {r['final_rss_mib']} MiB RSS "
                  f"(server {r['final_server_rss_mib']}, kernel {r['final_kernels_rss_mib']}), {r['final_pss_mib']} MiB "
                  f"PSS, {r['final_uss_mib']} MiB USS; {r['cells']} cells in {r['run_s']} s")

    assert not hub.strays, "processes left running after the hub stopped:\n" + "\n".join(hub.strays)
    for n, r in result["students"].items():
        assert r["kernel"] == "python3"
        assert not r["errors"], f"{n}: " + "; ".join(r["errors"])
        assert r["replies"] == ["ok"] * r["cells"] and r["cells"] >= 10, (n, r["replies"])
        # a server and its kernel (at least two processes), and within the memory the config promises each student
        assert r["processes"] >= 2 and 100 < r["peak_rss_mib"] < MEM_LIMIT / 2**20, (n, r)
