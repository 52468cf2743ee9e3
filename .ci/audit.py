"""An honest pip-audit gate for .ci/run.

pip-audit exits 0 when it could not audit anything at all (every dependency "not found
on PyPI", as behind a package mirror without PyPI's vulnerability API), which makes a
gate that checks nothing look green. This runs pip-audit with JSON output and decides:

- a known vulnerability in any installed dependency: list them, exit 1;
- nothing could be audited (every dependency skipped, or no service reachable): one
  WARNING line saying the audit did not run here and why, exit 0;
- otherwise: say how many were audited (and skipped), exit 0.

It asks PyPI's JSON API first and, when that audits nothing, OSV (api.osv.dev).
`--osv-url URL` asks only that OSV API instead (a mirror of OSV, or the test's own server
on 127.0.0.1 that proves the gate fails on a vulnerability); `--cache-dir` is pip-audit's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SERVICES = ("pypi", "osv")
TIMEOUT = 300


@dataclass(frozen=True)
class Verdict:
    exit_code: int
    lines: list[str]
    audited: int = 0


def verdict(report: Any, service: str = "pypi") -> Verdict:
    """Decide from one pip-audit JSON report (a dict with a `dependencies` list)."""
    dependencies = report.get("dependencies") if isinstance(report, dict) else None
    if not isinstance(dependencies, list):
        return Verdict(0, [f"WARNING: pip-audit ({service}) gave no report to read"])
    vulnerable: list[str] = []
    skipped: list[str] = []
    audited = 0
    for dependency in dependencies:
        if not isinstance(dependency, dict):
            continue
        name = f"{dependency.get('name', '?')} {dependency.get('version', '')}".strip()
        if "skip_reason" in dependency and "vulns" not in dependency:
            skipped.append(str(dependency.get("skip_reason") or name))
            continue
        audited += 1
        for vuln in dependency.get("vulns") or []:
            fixes = ", ".join(vuln.get("fix_versions") or []) or "no fixed version yet"
            aliases = ", ".join(vuln.get("aliases") or [])
            also = f" ({aliases})" if aliases else ""
            vulnerable.append(f"{name}: {vuln.get('id', '?')}{also}; fixed in {fixes}")
    if vulnerable:
        lines = [f"pip-audit ({service}): {len(vulnerable)} known vulnerabilit(y/ies):"]
        return Verdict(1, lines + [f"  {line}" for line in vulnerable], audited)
    if audited == 0:
        reason = skipped[0] if skipped else "the report lists no dependencies"
        return Verdict(
            0,
            [
                f"WARNING: pip-audit could not audit any of {len(dependencies)} dependencies "
                f"with {service} ({reason}); no vulnerability check ran here."
            ],
        )
    note = f", {len(skipped)} skipped (not on the index)" if skipped else ""
    return Verdict(
        0, [f"pip-audit ({service}): {audited} audited{note}, no known vulnerabilities"], audited
    )


def run_pip_audit(service: str, extra: Sequence[str] = ()) -> tuple[Any, str]:
    """One pip-audit run: the parsed JSON report (None if there is none) and why not."""
    command = [
        sys.executable,
        "-m",
        "pip_audit",
        "--skip-editable",
        "--progress-spinner",
        "off",
        "-f",
        "json",
        "-s",
        service,
        *extra,
    ]
    try:
        done = subprocess.run(  # noqa: S603 - a fixed command, no input from outside
            command, capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        return None, f"pip-audit -s {service} timed out after {TIMEOUT} s"
    try:
        return json.loads(done.stdout), ""
    except json.JSONDecodeError:
        errors = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return None, errors[-1][:300] if errors else f"exit status {done.returncode}"


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--osv-url", help="ask only this OSV API (a mirror, a test server)")
    parser.add_argument("--cache-dir", help="pip-audit's cache folder")
    args = parser.parse_args(list(argv))
    services: Sequence[str] = SERVICES
    extra: list[str] = []
    if args.cache_dir:
        extra += ["--cache-dir", args.cache_dir]
    if args.osv_url:
        services, extra = ("osv",), [*extra, "--osv-url", args.osv_url]
    reasons: list[str] = []
    for service in services:
        report, problem = run_pip_audit(service, extra)
        if report is None:
            reasons.append(f"{service}: {problem}")
            continue
        result = verdict(report, service)
        if result.exit_code or result.audited:
            print("\n".join(result.lines))
            return result.exit_code
        reasons.append(f"{service}: {result.lines[0].removeprefix('WARNING: ')}")
    print(
        "WARNING: no dependency was checked for known vulnerabilities: neither PyPI's "
        "vulnerability API nor OSV answered from here: " + " | ".join(reasons)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
