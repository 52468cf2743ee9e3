"""Load on the web chat: many concurrent visitors clicking through to the plan.

    .venv/bin/python bench/web_load.py [--sessions 400] [--concurrency 50] [--max-seconds 60]
                                       [--nlu]

Starts `python -m bot web` as its own process on 127.0.0.1 (a temporary database and
secret; the per-address limit raised, since every visitor here shares 127.0.0.1), then
runs visitors with their own cookies, each as a browser with JavaScript would: open the
page, press seven buttons to the plan through the fetch path, then the quick exit. With
`--nlu` the embedded classifier is loaded and each visitor also types one message.
Prints requests per second, p50/p99 latency, errors and the server's resident memory.
Bounded in visitors and in time: it stops starting new visitors after --max-seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
_PRESSES = ("nl", "yes", "me", "a13_15", "bullying", "yes", "instagram")
PLAN = [("press", option) for option in _PRESSES]
# With the classifier: say what happened in one's own words, then confirm its suggestion.
TYPED_PLAN = [
    *PLAN[:4],
    ("say", "ik word gepest op school en online"),
    ("press", "yes"),
    *PLAN[5:],
]
_CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')
_BUTTON = re.compile(r'name="button" value="([^"]+)"')


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    sessions_done: int = 0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


def buttons(html: str) -> dict[str, str]:
    return {unescape(v).rsplit(":", 1)[1]: unescape(v) for v in _BUTTON.findall(html)}


async def timed(tally: Tally, call: object) -> httpx.Response | None:
    started = time.perf_counter()
    try:
        response: httpx.Response = await call  # type: ignore[misc]
    except httpx.HTTPError as error:
        tally.error(type(error).__name__)
        return None
    tally.latencies.append(time.perf_counter() - started)
    if response.status_code >= 400:
        tally.error(f"http_{response.status_code}")
    return response


async def visitor(base: str, tally: Tally, typed: bool) -> None:
    """One person: the page, seven answers to the plan (one typed with --nlu), quick exit."""
    fetch = {"X-Hulpwijzer": "fetch"}
    async with httpx.AsyncClient(base_url=base, timeout=30.0) as client:
        page = await timed(tally, client.get("/"))
        if page is None or page.status_code != 200:
            return
        match = _CSRF.search(page.text)
        if match is None:
            tally.error("no_token")
            return
        csrf = match.group(1)
        html = page.text
        for kind, value in TYPED_PLAN if typed else PLAN:
            if kind == "say":
                form = {"csrf": csrf, "text": value}
            else:
                data = buttons(html).get(value)
                if data is None:
                    tally.error(f"no_button_{value}")
                    return
                form = {"csrf": csrf, "button": data}
            reply = await timed(tally, client.post("/send", data=form, headers=fetch))
            if reply is None or reply.status_code != 200:
                return
            html = reply.json()["html"]
        if "Dit is jouw plan" not in html:
            tally.error("no_plan")
            return
        await timed(tally, client.post("/exit", data={"csrf": csrf}))
        tally.sessions_done += 1


async def drive(
    base: str, sessions: int, concurrency: int, max_seconds: float, typed: bool
) -> tuple[Tally, float]:
    tally = Tally()
    gate = asyncio.Semaphore(concurrency)
    deadline = time.monotonic() + max_seconds

    async def one() -> None:
        async with gate:
            if time.monotonic() < deadline:
                await visitor(base, tally, typed)

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(sessions)))
    return tally, time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def memory_kib(pid: int) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (the server's own work, not waiting)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_ready(base: str, process: subprocess.Popen[bytes], seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the web server exited with code {process.returncode}")
        try:
            if httpx.get(f"{base}/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("the web server did not answer /health in time")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--nlu", action="store_true", help="load the classifier; type once")
    args = parser.parse_args()

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "HULPWIJZER_SECRET": secrets.token_urlsafe(48),
            "HULPWIJZER_VAR": tmp,
            "HULPWIJZER_DB": str(Path(tmp) / "bench.sqlite3"),
            "HULPWIJZER_WEB_IP_PER_MINUTE": "10000000",
            "HULPWIJZER_LOG_LEVEL": "WARNING",
        }
        command = [sys.executable, "-m", "bot", "web", "--host", "127.0.0.1", "--port", str(port)]
        if not args.nlu:
            command.append("--no-nlu")
        server = subprocess.Popen(command, cwd=ROOT, env=env)
        try:
            wait_ready(base, server)
            idle = memory_kib(server.pid)
            cpu_before = cpu_seconds(server.pid)
            tally, seconds = asyncio.run(
                drive(base, args.sessions, args.concurrency, args.max_seconds, args.nlu)
            )
            server_cpu = cpu_seconds(server.pid) - cpu_before
            after = memory_kib(server.pid)
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()

    load = Path("/proc/loadavg").read_text().split()[:3]
    requests = len(tally.latencies)
    errors = sum(tally.errors.values())
    print(
        f"web chat load: {args.sessions} visitors, {args.concurrency} at a time, "
        f"nlu={'embedded' if args.nlu else 'off'}, python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs, load average {' '.join(load)} (client and server share them)"
    )
    print()
    print(
        "| visitors done | requests | seconds | requests/s | p50 ms | p99 ms | errors "
        "| server CPU ms/request | RSS idle MiB | RSS after MiB | peak RSS MiB |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    p50 = statistics.median(tally.latencies) * 1000 if requests else float("nan")
    p99 = percentile(tally.latencies, 0.99) * 1000 if requests else float("nan")
    print(
        f"| {tally.sessions_done} | {requests} | {seconds:.1f} | {requests / seconds:.0f} "
        f"| {p50:.1f} | {p99:.1f} | {errors} | {server_cpu * 1000 / max(requests, 1):.1f} "
        f"| {idle.get('VmRSS', 0) / 1024:.0f} "
        f"| {after.get('VmRSS', 0) / 1024:.0f} | {after.get('VmHWM', 0) / 1024:.0f} |"
    )
    if tally.errors:
        print()
        print("errors:", ", ".join(f"{k}={v}" for k, v in sorted(tally.errors.items())))
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
