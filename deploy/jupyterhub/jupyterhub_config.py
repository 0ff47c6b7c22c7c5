"""JupyterHub for a one-day workshop room on one server (deploy/jupyterhub/README.md).

    jupyterhub -f deploy/jupyterhub/jupyterhub_config.py        # make hub does this

Every setting comes from an environment variable, so that the same file serves the rehearsal
on a laptop (``make hub``) and the day on a server:

=================  ==================================================================  ==========
variable           what                                                                default
=================  ==================================================================  ==========
NBW_ROSTER         roster file, one learner name a line                                (required)
NBW_PASSWORD       the room's shared password, 8 characters or more                    (required)
NBW_MODE           ``system``: one local system user per learner (roster.py create);   system as
                   ``rehearsal``: every learner's server runs as you, homes under      root, else
                   NBW_STATE/homes (no isolation: a rehearsal only)                    rehearsal
NBW_AUTH           ``shared`` (one password for the room) or ``pam`` (each learner's   shared
                   own system password: roster.py create --passwords)
NBW_IP, NBW_PORT   where the room connects                                             127.0.0.1,
                                                                                       8000
NBW_HUB_PORT,      the hub's and the proxy's internal API ports                        8081, 8001
NBW_PROXY_API_PORT
NBW_STATE          the hub's database, cookie secret and proxy pid file                build/hub
NBW_LEARNERS       learners sharing the server (threads and memory are divided by it)  roster size
NBW_MEM_MB         memory per learner, all their processes together                    shared out
NBW_SERIES         folder copied to ~/workshop on first login                          see below
NBW_SHARED         shared read-only folder (models, wheels)                            /srv/...
NBW_IDLE_S         seconds without activity before a server is stopped                 3600
NBW_CHP            the configurable-http-proxy command                                 found
=================  ==================================================================  ==========

The rules themselves (threads per kernel, memory, first-login copy) are in workshop.py.
"""

import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import workshop  # noqa: E402  (beside this file)

c = get_config()  # noqa: F821  (JupyterHub's config loader defines it)
env = os.environ.get

# --- who: the roster, the login ---------------------------------------------------------------
roster = workshop.read_roster(env("NBW_ROSTER") or "NBW_ROSTER is not set")
learners = int(env("NBW_LEARNERS") or len(roster))
c.Authenticator.allowed_users = set(roster)
if (env("NBW_AUTH") or "shared") == "pam":
    c.JupyterHub.authenticator_class = "pam"
else:
    c.JupyterHub.authenticator_class = "shared-password"
    c.SharedPasswordAuthenticator.user_password = workshop.check_password(env("NBW_PASSWORD"))

# --- where: ports, state ----------------------------------------------------------------------
state = Path(env("NBW_STATE") or workshop.REPO / "build" / "hub").resolve()
state.mkdir(parents=True, exist_ok=True, mode=0o700)
c.JupyterHub.ip = env("NBW_IP") or "127.0.0.1"
c.JupyterHub.port = int(env("NBW_PORT") or 8000)
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int(env("NBW_HUB_PORT") or 8081)
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{int(env('NBW_PROXY_API_PORT') or 8001)}"
c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
c.ConfigurableHTTPProxy.pid_file = str(state / "proxy.pid")
chp = env("NBW_CHP") or shutil.which("configurable-http-proxy") or str(
    workshop.REPO / ".venv" / "chp" / "node_modules" / ".bin" / "configurable-http-proxy")
c.ConfigurableHTTPProxy.command = [chp]
# a restart of the hub (a crash, a config change) leaves the learners' servers running; the
# new hub finds them in its database and routes to them again
c.JupyterHub.cleanup_servers = False

# --- each learner's server ----------------------------------------------------------------
bin_dir = Path(sys.executable).parent
threads = workshop.threads_per_kernel(workshop.cores_available(), learners)
mem_mb = workshop.mb(env("NBW_MEM_MB"),
                     workshop.memory_per_learner(workshop.total_memory_mb(), learners))
series = Path(env("NBW_SERIES") or workshop.default_series())
shared = Path(env("NBW_SHARED") or workshop.DEFAULT_SHARED)
mode = env("NBW_MODE") or ("system" if os.getuid() == 0 else "rehearsal")
if mode not in ("system", "rehearsal"):
    raise ValueError(f"NBW_MODE={mode!r}: use 'system' (a system user per learner) or "
                     "'rehearsal' (every server runs as you)")

c.Spawner.cmd = [str(bin_dir / "jupyterhub-singleuser")]
c.Spawner.default_url = f"/lab/tree/{workshop.SERIES_DIR}"
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 90
c.Spawner.env_keep = ["PATH", "LANG", "LC_ALL", "VIRTUAL_ENV"]
if mode == "system":
    c.JupyterHub.spawner_class = "localprocess"
else:
    c.JupyterHub.spawner_class = "simple"
    c.SimpleLocalProcessSpawner.home_dir_template = str(state / "homes" / "{username}")
    if os.getuid() == 0:
        c.Spawner.args = ["--ServerApp.allow_root=True"]


def _home_and_owner(spawner):
    """The learner's home, and the uid/gid to give their files (None: the hub's own)."""
    if mode == "rehearsal":
        home = Path(spawner.home_dir)
        home.mkdir(parents=True, exist_ok=True)
        return home, None, None
    import pwd

    try:
        entry = pwd.getpwnam(spawner.user.name)
    except KeyError:
        raise RuntimeError(f"learner {spawner.user.name!r} has no system account; create the "
                           "room's accounts first: python deploy/jupyterhub/roster.py create "
                           "ROSTER") from None
    return Path(entry.pw_dir), entry.pw_uid, entry.pw_gid


def pre_spawn(spawner):
    """First login: the series into ~/workshop, a private TMPDIR; the environment."""
    home, uid, gid = _home_and_owner(spawner)
    workshop.prepare_home(home, series, uid, gid)
    spawner.environment.update(workshop.learner_environment(home, threads, shared))
    spawner.log.info("learner %s: %d torch thread(s), %d MB, series from %s",
                     spawner.user.name, threads, mem_mb, series)


c.Spawner.pre_spawn_hook = pre_spawn

# --- the room's services: idle culling, the memory guard ---------------------------------------
c.JupyterHub.load_roles = [{
    "name": "idle-culler",
    "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
    "services": ["idle-culler"],
}]
c.JupyterHub.services = [
    {"name": "idle-culler",
     "command": [sys.executable, "-m", "jupyterhub_idle_culler",
                 f"--timeout={int(env('NBW_IDLE_S') or 3600)}"]},
    {"name": "memory-guard",
     "command": [sys.executable, str(HERE / "memguard.py"), f"--limit-mb={mem_mb}"]},
]
