"""A learner, as a program: logs in through the hub's login form, gets an API token, starts
their server, starts a kernel and runs code through the kernel's websocket. The hub tests
(tests/hub/) and the load test (bench/hub_load.py) drive the room with it.

Only tornado (which JupyterHub and Jupyter Server already need) and the standard library.

    learner = Learner("http://127.0.0.1:8000", "learner-01", "the-password")
    await learner.login(); await learner.start_server()
    kernel = await learner.kernel()
    reply = await kernel.run("1 + 1")          # reply.ok, reply.text, reply.seconds
"""

from __future__ import annotations

import asyncio
import json
import re
import struct
import time
import uuid
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from urllib.parse import urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect


class HubError(RuntimeError):
    """The hub or a learner's server answered something other than what a learner expects."""


@dataclass
class Reply:
    """What one cell gave: its printed text (stdout and results), its error, its seconds."""

    text: str = ""
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Learner:
    url: str
    name: str
    password: str
    token: str | None = None
    cookies: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        self.url = self.url.rstrip("/")
        self.http = AsyncHTTPClient()

    # -- HTTP ---------------------------------------------------------------------------------

    def _remember(self, response) -> None:
        for header in response.headers.get_list("Set-Cookie"):
            for key, morsel in SimpleCookie(header).items():
                self.cookies[key] = morsel.coded_value

    async def request(self, path: str, method: str = "GET", body=None, ok=(200, 201, 202, 204),
                      **kw):
        """One request as this learner (token when there is one, else the login cookies);
        the response, or HubError naming the path and status when it is not in ``ok``."""
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        if self.token:
            headers["Authorization"] = f"token {self.token}"
        if "_xsrf" in self.cookies:
            headers["X-XSRFToken"] = self.cookies["_xsrf"]
        if isinstance(body, dict):
            body = json.dumps(body)
        req = HTTPRequest(self.url + path, method=method, headers=headers, body=body,
                          follow_redirects=False, request_timeout=kw.pop("timeout", 120), **kw)
        try:
            resp = await self.http.fetch(req, raise_error=False)
        except (OSError, HTTPClientError) as err:
            raise HubError(f"{self.name}: {method} {path}: {err}") from err
        self._remember(resp)
        if resp.code not in ok:
            raise HubError(f"{self.name}: {method} {path} answered {resp.code}: "
                           f"{(resp.body or b'')[:300]!r}")
        return resp

    async def login(self) -> None:
        """The login form, as a browser fills it in; then an API token for this learner from
        the REST API (the same password), which every later request carries."""
        page = await self.request("/hub/login")
        xsrf = re.search(rb'name="_xsrf" value="([^"]+)"', page.body)
        form = {"username": self.name, "password": self.password}
        if xsrf:
            form["_xsrf"] = xsrf.group(1).decode()
        resp = await self.request("/hub/login?next=", "POST", urlencode(form),
                                  ok=(302, 200, 403))
        if resp.code != 302 or "jupyterhub-hub-login" not in self.cookies:
            raise HubError(f"{self.name}: the login form refused the password (it answered "
                           f"{resp.code}, not a redirect to the learner's server)")
        # the REST API's own login: the same name and password in the body give a token
        self.cookies.clear()
        resp = await self.request(f"/hub/api/users/{self.name}/tokens", "POST",
                                  {"auth": {"username": self.name, "password": self.password},
                                   "note": "hubclient", "expires_in": 86400})
        self.token = json.loads(resp.body)["token"]

    # -- the learner's server -----------------------------------------------------------------

    async def server_status(self) -> dict:
        resp = await self.request(f"/hub/api/users/{self.name}")
        return json.loads(resp.body)

    async def start_server(self, timeout: float = 150) -> None:
        """Ask the hub for this learner's server and wait until it answers."""
        await self.request(f"/hub/api/users/{self.name}/server", "POST", {},
                           ok=(201, 202, 400))  # 400: already running
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            server = (await self.server_status()).get("servers", {}).get("", {})
            if server.get("ready"):
                await self.request(f"/user/{self.name}/api/status")
                return
            await asyncio.sleep(0.5)
        raise HubError(f"{self.name}: the server was not ready after {timeout:.0f} s")

    async def stop_server(self, timeout: float = 60) -> None:
        """Ask the hub to stop this learner's server and wait until it is stopped."""
        await self.request(f"/hub/api/users/{self.name}/server", "DELETE", ok=(202, 204))
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            status = await self.server_status()
            if "" not in status.get("servers", {}) and not status.get("pending"):
                return
            await asyncio.sleep(0.5)
        raise HubError(f"{self.name}: the server had not stopped after {timeout:.0f} s")

    async def kernel(self, kernel_id: str | None = None) -> Kernel:
        """A new kernel (or the one named) in this learner's server, connected."""
        if kernel_id is None:
            resp = await self.request(f"/user/{self.name}/api/kernels", "POST",
                                      {"name": "python3"})
            kernel_id = json.loads(resp.body)["id"]
        k = Kernel(self, kernel_id)
        await k.connect()
        return k


class Kernel:
    """One kernel of a learner's server, through its websocket (Jupyter's JSON protocol)."""

    def __init__(self, learner: Learner, kernel_id: str) -> None:
        self.learner, self.id = learner, kernel_id
        self.session = uuid.uuid4().hex
        self.ws = None

    async def connect(self, timeout: float = 60) -> None:
        ws_url = self.learner.url.replace("http", "ws", 1)
        url = (f"{ws_url}/user/{self.learner.name}/api/kernels/{self.id}/channels"
               f"?session_id={self.session}")
        req = HTTPRequest(url, headers={"Authorization": f"token {self.learner.token}"},
                          request_timeout=timeout)
        self.ws = await websocket_connect(req)

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
            self.ws = None

    async def run(self, code: str, timeout: float = 300) -> Reply:
        """Run ``code`` as a cell; its text, error and seconds (from sending to the idle)."""
        msg_id = uuid.uuid4().hex
        msg = {"header": {"msg_id": msg_id, "username": self.learner.name,
                          "session": self.session, "msg_type": "execute_request",
                          "version": "5.3", "date": ""},
               "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
               "content": {"code": code, "silent": False, "store_history": True,
                           "user_expressions": {}, "allow_stdin": False,
                           "stop_on_error": True}}
        start = time.perf_counter()
        await self.ws.write_message(json.dumps(msg))
        reply, end = Reply(), time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise HubError(f"{self.learner.name}: no answer after {timeout:.0f} s to "
                               f"{code[:60]!r}")
            raw = await asyncio.wait_for(self.ws.read_message(), left)
            if raw is None:
                raise HubError(f"{self.learner.name}: the kernel's websocket closed while "
                               f"running {code[:60]!r} (kernel died or server stopped)")
            if _collect(_decode(raw), msg_id, reply):
                reply.seconds = time.perf_counter() - start
                return reply


def _decode(raw: str | bytes) -> dict:
    """A websocket message as a dict. Messages with binary buffers (a widget's picture) come
    as bytes: a count n, n offsets (big-endian 32-bit), then the JSON message and the buffers
    at those offsets; only the JSON part is read."""
    if isinstance(raw, str):
        return json.loads(raw)
    n = struct.unpack("!I", raw[:4])[0]
    offsets = struct.unpack(f"!{n}I", raw[4:4 + 4 * n])
    end = offsets[1] if n > 1 else len(raw)
    return json.loads(raw[offsets[0]:end].decode("utf-8"))


def _collect(m: dict, msg_id: str, reply: Reply) -> bool:
    """Add one iopub message of the cell ``msg_id`` to ``reply``; True when the cell is done."""
    kind, content = m.get("msg_type"), m.get("content", {})
    if kind == "status" and content.get("execution_state") in ("restarting", "dead"):
        # the server says the kernel died (killed, out of memory): this cell never finishes
        reply.error = f"kernel {content['execution_state']}: the kernel died while running"
        return True
    if m.get("parent_header", {}).get("msg_id") != msg_id:
        return False
    if kind == "stream":
        reply.text += content.get("text", "")
    elif kind in ("execute_result", "display_data"):
        reply.text += content.get("data", {}).get("text/plain", "") + "\n"
    elif kind == "error":
        reply.error = f"{content.get('ename')}: {content.get('evalue')}"
    elif kind == "status" and content.get("execution_state") == "idle":
        return True
    return False
