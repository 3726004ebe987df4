"""JupyterHub for a phi4lab class on one machine: `make hub` (or `.venv/bin/jupyterhub -f hub/jupyterhub_config.py`).

What a hub is, in three processes (all started by `jupyterhub`):

* the **hub** (Python): logs students in, starts and stops their servers, keeps its state in a small SQLite file;
* the **proxy** (configurable-http-proxy, Node.js, pinned in hub/package.json; `npm ci --prefix hub` installs it):
  the one public port. It routes /hub/ to the hub and /user/<name>/ to that student's own server;
* one **single-user server per student** (`jupyterhub-singleuser`: JupyterLab, from this repository's .venv), which
  starts the student's kernels. A kernel is where the memory goes: torch, phi4lab and the notebook's models.

Plus one **service**, jupyterhub-idle-culler, which stops servers nobody has used for a while, so that a student who
closes the laptop at lunch stops holding a kernel's memory.

Every setting a class may need to change reads an environment variable (PHI4LAB_HUB_*), so that this file stays as
committed; tests/test_hub.py starts the hub with the same file on free ports, with a test authenticator and spawner.
The README's "Running a class on JupyterHub" says how many students one 2-core, 24 GB machine holds, and why.
"""

import os
import pwd
import shutil
import sys
from pathlib import Path

c = get_config()  # noqa: F821  (JupyterHub provides get_config when it loads this file)

ROOT = Path(__file__).resolve().parents[1]        # the repository
VENV_BIN = Path(sys.executable).parent            # the hub runs from .venv, and so does every student's server


def env(name, default):
    return os.environ.get(f"PHI4LAB_HUB_{name}", default)


# --- Where it listens -------------------------------------------------------------------------------------------
# 127.0.0.1 by default: a hub on a public address with a weak authenticator hands out a Python shell on this machine
# to whoever finds it. For a class, put it behind HTTPS (a reverse proxy such as nginx or Caddy, or
# c.JupyterHub.ssl_cert / ssl_key) and only then set PHI4LAB_HUB_IP=0.0.0.0.
IP = env("IP", "127.0.0.1")
c.JupyterHub.bind_url = f"http://{IP}:{env('PORT', '8000')}"
# The hub's own API, which the proxy and the students' servers call: never public.
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{env('API_PORT', '8081')}"
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{env('PROXY_API_PORT', '8001')}"
# The proxy from hub/node_modules (npm ci --prefix hub), else whatever `configurable-http-proxy` is on PATH.
_chp = ROOT / "hub" / "node_modules" / ".bin" / "configurable-http-proxy"
c.ConfigurableHTTPProxy.command = [str(_chp) if _chp.exists() else "configurable-http-proxy"]

# --- State: the user database, the cookie secret, pid files -----------------------------------------------------
# build/hub/ (git ignores build/). Delete it to forget every user; the cookie secret signs login cookies, keep it private.
STATE = Path(env("STATE", ROOT / "build" / "hub")).resolve()
STATE.mkdir(parents=True, exist_ok=True, mode=0o700)
c.JupyterHub.db_url = f"sqlite:///{STATE / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(STATE / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(STATE / "jupyterhub.pid")
c.ConfigurableHTTPProxy.pid_file = str(STATE / "jupyterhub-proxy.pid")
# On `jupyterhub` exit (Ctrl-C, SIGTERM) stop every student's server too (the default, said out loud): nothing is
# left holding memory after the class.
c.JupyterHub.cleanup_servers = True

# --- Who may log in ---------------------------------------------------------------------------------------------
# "pam" (the default): the machine's own accounts and passwords; the hub must run as root to check them and to start
# each student's server as that student. JupyterHub 5+ lets nobody in until told who may: here, the members of one
# Unix group (create it, and add each student: `groupadd phi4lab; useradd -m -G phi4lab alice`).
# "dummy" accepts any name and any password: for tests and a demo on 127.0.0.1 only, never for a class.
# Any other authenticator (GitHub, your university's OAuth/LTI...) is one `pip install` and its name away, e.g.
# PHI4LAB_HUB_AUTHENTICATOR=oauthenticator.github.GitHubOAuthenticator with that package's settings.
c.JupyterHub.authenticator_class = env("AUTHENTICATOR", "pam")
c.LocalAuthenticator.allowed_groups = {env("GROUP", "phi4lab")}
# Instructors: see every server in the admin page (/hub/admin), start and stop them.
c.Authenticator.admin_users = {name for name in env("ADMINS", "").split(",") if name}

# --- One server per student, as a local process -----------------------------------------------------------------
# "localprocess" (LocalProcessSpawner, the default): each student's server runs as that student's own Unix account,
# in their home folder, so students cannot read each other's work. The accounts must exist (see above), and the
# repository with its .venv must be readable by them (clone it to /opt/phi4lab, say, not under /root).
# "simple" (SimpleLocalProcessSpawner) runs every server as the hub's own user with a made-up home folder: no
# accounts needed and no isolation at all. It is for tests (tests/test_hub.py) and demos only.
SPAWNER = env("SPAWNER", "localprocess")
c.JupyterHub.spawner_class = SPAWNER
c.SimpleLocalProcessSpawner.home_dir_template = env("HOMES", "/tmp/phi4lab-hub/{username}")

# The server is JupyterLab from this repository's .venv, so the kernel it starts is phi4lab's interpreter: the
# notebooks ask for the kernel "python3", which inside .venv is .venv's own Python, with phi4lab and torch
# (`make kernel` registers the same interpreter as "phi4lab" for a JupyterLab started outside .venv).
c.Spawner.cmd = [str(VENV_BIN / "jupyterhub-singleuser")]
c.Spawner.default_url = "/lab"
c.Spawner.args = [
    "--MappingKernelManager.default_kernel_name=python3",
    # Closing a notebook's tab does not stop its kernel: a student who opens 00, then 01, then 02 holds three kernels'
    # memory. The server stops a kernel that no tab is connected to after PHI4LAB_HUB_KERNEL_IDLE_TIMEOUT seconds idle
    # (default 30 minutes); a kernel with its notebook open is kept (cull_connected is False).
    f"--MappingKernelManager.cull_idle_timeout={int(env('KERNEL_IDLE_TIMEOUT', '1800'))}",
    "--MappingKernelManager.cull_interval=300",
]
if SPAWNER == "simple" and os.geteuid() == 0:
    c.Spawner.args.append("--ServerApp.allow_root=True")   # a test or demo run as root (containers, CI)

# The course is offline by design, as `make lab` runs it; .venv's bin first, so that `!pip`, `!phi4lab` work.
c.Spawner.environment = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
}
# Threads per kernel: 1 by default. PyTorch's own default is one thread per core in every kernel: fastest for one
# student alone, but when several kernels compute at once their threads wait for each other on the shared cores, and
# the same work costs several times the CPU. Measured on the 2-core machine while other kernels were busy: notebook 08
# ran in 162 CPU seconds with one thread, and in over 700 with PyTorch's two (README, "Running a class on
# JupyterHub"). One thread also stops one busy student from taking both cores. PHI4LAB_HUB_THREADS=all keeps
# PyTorch's choice (a machine with a core per student).
THREADS = env("THREADS", "1")
if THREADS != "all":
    c.Spawner.environment["OMP_NUM_THREADS"] = THREADS

# When the whole class logs in at 9:00, servers start slower than JupyterHub's 30 s / 60 s defaults allow.
c.Spawner.http_timeout = 120
c.Spawner.start_timeout = 180

COURSE = Path(env("COURSE", ROOT / "course")).resolve()   # or build/student after `make student`


def copy_course(spawner):
    """Give each student their own copy of the course, once: ~/phi4lab-course, opened when their server starts.

    One shared folder would let every student overwrite everybody's notebooks. A copy that already exists is kept:
    it holds the student's work (delete it to start over from the course as committed).
    """
    from jupyterhub.spawner import SimpleLocalProcessSpawner
    if isinstance(spawner, SimpleLocalProcessSpawner):
        home, owner = Path(spawner.home_dir), None            # a made-up home, owned by the hub's own user
    else:
        account = pwd.getpwnam(spawner.user.name)            # LocalProcessSpawner: the student's Unix account
        home, owner = Path(account.pw_dir), (account.pw_uid, account.pw_gid)
    target = home / "phi4lab-course"
    if not target.exists():
        home.mkdir(parents=True, exist_ok=True)
        shutil.copytree(COURSE, target, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
        if owner and os.geteuid() == 0:                      # the hub runs as root; the copy is the student's
            for folder, dirs, files in os.walk(target):
                for name in [folder, *(os.path.join(folder, f) for f in dirs + files)]:
                    os.chown(name, *owner)
    spawner.notebook_dir = str(target)


c.Spawner.pre_spawn_hook = copy_course

# --- Memory ---------------------------------------------------------------------------------------------------
# What one student needs: their server plus the kernel of the heaviest notebook. Measured on the 2-core, 24 GB
# machine (README, "Running a class on JupyterHub"): notebook 11's kernel peaks at 2.23 GiB RSS alone (the most of
# the 14; /usr/bin/time -v over nbconvert, one thread), a student's JupyterLab server holds 0.18 GiB (tests/test_hub.py),
# so 2.41 GiB; 3G leaves a margin for a student who runs a cell twice.
#
# LocalProcessSpawner does NOT enforce this limit: it only passes it to the server as MEM_LIMIT (JupyterLab's
# resource-usage display can show it). One student who loads a large model can still take the whole machine, and the
# kernel the Linux OOM killer picks may be anyone's. SystemdSpawner (a cgroup per student) and DockerSpawner (a
# container per student) enforce mem_limit and cpu_limit; so does zero-to-jupyterhub on Kubernetes.
c.Spawner.mem_limit = env("MEM_LIMIT", "3G")

# --- The idle culler ---------------------------------------------------------------------------------------------
# A hub-managed service: JupyterHub starts it, gives it a token with only the scopes below, and stops it on exit.
# Every 10 minutes it stops servers idle for PHI4LAB_HUB_IDLE_TIMEOUT seconds (default one hour); a stopped server
# frees its kernels' memory, and the student's files stay (the next login starts a fresh server on them).
IDLE_TIMEOUT = int(env("IDLE_TIMEOUT", "3600"))
c.JupyterHub.services = [{
    "name": "idle-culler",
    "command": [sys.executable, "-m", "jupyterhub_idle_culler", f"--timeout={IDLE_TIMEOUT}", "--cull-every=600"],
}]
c.JupyterHub.load_roles = [{
    "name": "idle-culler",
    "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
    "services": ["idle-culler"],
}]

# --- An API token for scripts (and tests/test_hub.py) ------------------------------------------------------------
# With PHI4LAB_HUB_ADMIN_TOKEN set, a service "phi4lab-admin" holds that token, with the scopes to create students,
# start and stop their servers and use them (`Authorization: token ...` on /hub/api/ and /user/<name>/api/).
# Generate one with `openssl rand -hex 32`; whoever has it controls every student's server.
if env("ADMIN_TOKEN", ""):
    c.JupyterHub.services.append({"name": "phi4lab-admin", "api_token": env("ADMIN_TOKEN", "")})
    c.JupyterHub.load_roles.append({
        "name": "phi4lab-admin",
        "scopes": ["admin:users", "admin:servers", "access:servers", "list:users", "read:users", "list:services",
                   "read:services"],
        "services": ["phi4lab-admin"],
    })
