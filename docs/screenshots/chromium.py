"""A headless Chromium driven over the DevTools protocol (aiohttp, which Ray's dashboard already installs): open
a page as a logged-in dashboard user (Ray's token cookie), wait for text, read it, take a screenshot.

Used by docs/screenshots/make.py and by the dashboard test; neither needs it when no browser is installed
(`find()` says None and they say what they skipped).
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

BINARIES = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome", "headless_shell")
ENV = "TICKETSWEEP_CHROMIUM"  # a browser binary to use instead of looking on PATH
TOKEN_COOKIE = "ray-authentication-token"  # Ray 2.60's dashboard session cookie (what its login sets)


def find() -> str | None:
    """A Chromium binary: $TICKETSWEEP_CHROMIUM, else the first of BINARIES on PATH; None if there is none."""
    named = os.environ.get(ENV)
    if named:
        return named if shutil.which(named) else None
    return next((path for path in map(shutil.which, BINARIES) if path), None)


class BrowserError(RuntimeError):
    pass


class Chromium:
    """One headless browser with one page. Use as a context manager."""

    def __init__(self, binary: str, width: int = 1500, height: int = 950, start_timeout_s: float = 60.0):
        self.binary, self.width, self.height, self.start_timeout_s = binary, width, height, start_timeout_s
        self.loop = asyncio.new_event_loop()
        self.profile = tempfile.mkdtemp(prefix="ts-chromium-")
        self.process = None
        self.session = self.ws = None
        self._id = 0

    def __enter__(self) -> "Chromium":
        args = [self.binary, "--headless", "--disable-gpu", "--no-first-run", "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1", f"--user-data-dir={self.profile}",
                f"--window-size={self.width},{self.height}", "--hide-scrollbars", "about:blank"]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to start its sandbox as root
        # Its own process group: Debian's binary is a shell script that starts the browser as its child, and
        # the browser starts more; ending the group ends them all.
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        try:
            self.loop.run_until_complete(self._connect())
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.ws is not None:
            self.loop.run_until_complete(self.ws.close())
        if self.session is not None:
            self.loop.run_until_complete(self.session.close())
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()
        self.loop.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    async def _connect(self) -> None:
        import aiohttp

        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.start_timeout_s
        while not port_file.exists() or len(port_file.read_text().split()) < 2:
            if self.process.poll() is not None:
                raise BrowserError(f"{self.binary} exited at start (code {self.process.returncode})")
            if time.monotonic() > deadline:
                raise BrowserError(f"{self.binary}: no DevTools port within {self.start_timeout_s:.0f} s")
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        self.session = aiohttp.ClientSession()
        async with self.session.get(f"http://127.0.0.1:{port}/json/list") as r:
            pages = [t for t in await r.json(content_type=None) if t.get("type") == "page"]
        if not pages:
            raise BrowserError(f"{self.binary}: no page to drive")
        self.ws = await self.session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)
        for method in ("Page.enable", "Network.enable", "Runtime.enable"):
            await self._call(method)
        await self._call("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height,
                         deviceScaleFactor=1, mobile=False)

    async def _call(self, method: str, **params):
        self._id += 1
        ident = self._id
        await self.ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads((await self.ws.receive()).data)
            if message.get("id") == ident:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error'].get('message')}")
                return message.get("result", {})

    def call(self, method: str, **params) -> dict:
        return self.loop.run_until_complete(self._call(method, **params))

    def log_in(self, dashboard_url: str, token: str) -> None:
        """What Ray's login page does: the token in the dashboard's session cookie."""
        self.call("Network.setCookie", name=TOKEN_COOKIE, value=token, url=dashboard_url.rstrip("/") + "/",
                  path="/", httpOnly=True)

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (JSON-able values only)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:80]!r}: {result['exceptionDetails'].get('text')}")
        return result.get("result", {}).get("value")

    def text(self) -> str:
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def rows(self, needle: str) -> list[list[str]]:
        """The cells' text of every table row that holds `needle` (a header row too, if it does)."""
        return self.evaluate(f"[...document.querySelectorAll('tr')]"
                             f".filter(r => r.innerText.includes({json.dumps(needle)}))"
                             f".map(r => [...r.cells].map(c => c.innerText.trim()))")

    def wait_for(self, *needles: str, timeout_s: float = 60.0) -> str:
        """The page's text once it holds every one of `needles` (polled; the dashboard fetches as it goes)."""
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.text()
            if all(n in text for n in needles):
                return text
            if time.monotonic() > deadline:
                missing = [n for n in needles if n not in text]
                raise BrowserError(f"page never showed {missing} within {timeout_s:.0f} s; it shows: "
                                   f"{text[:500]!r}")
            time.sleep(0.5)

    def click(self, text: str, among: str = "body *", timeout_s: float = 60.0) -> None:
        """Click the innermost element (of those the CSS selector `among` picks) whose whole text is `text` as
        written (CSS may capitalise it on screen): a section's title, a tab."""
        clicked = f"""(() => {{
            const all = [...document.querySelectorAll({json.dumps(among)})]
                .filter(e => e.textContent.trim() === {json.dumps(text)});
            const inner = all.filter(e => !all.some(o => o !== e && e.contains(o)));
            if (inner.length) inner[0].click();
            return inner.length > 0;
        }})()"""
        self._until(clicked, timeout_s, f"nothing to click that reads {text!r}")

    def choose(self, label: str, option: str, timeout_s: float = 60.0) -> None:
        """Pick `option` in the drop-down field labelled `label` (a table's filter), typing it as a user does."""
        focused = f"""(() => {{
            const label = [...document.querySelectorAll("label")]
                .find(l => l.textContent.trim() === {json.dumps(label)});
            const input = label && document.getElementById(label.htmlFor);
            if (!input) return false;
            input.focus();
            input.select();
            return true;
        }})()"""
        self._until(focused, timeout_s, f"no field labelled {label!r}")
        self.call("Input.insertText", text=option)
        picked = f"""(() => {{
            const item = [...document.querySelectorAll("[role=option]")]
                .find(o => o.textContent.trim() === {json.dumps(option)});
            if (item) item.click();
            return Boolean(item);
        }})()"""
        self._until(picked, timeout_s, f"field {label!r} never offered {option!r}")

    def _until(self, expression: str, timeout_s: float, failure: str) -> None:
        """Evaluate `expression` until it is true; BrowserError saying `failure` if it is not within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while not self.evaluate(expression):
            if time.monotonic() > deadline:
                raise BrowserError(f"{failure} within {timeout_s:.0f} s; the page shows: {self.text()[:500]!r}")
            time.sleep(0.5)

    def screenshot(self, path: str | Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        Path(path).write_bytes(base64.b64decode(data))
