"""The fuzz properties of tests/test_fuzz.py with many more examples than CI runs.

    .venv/bin/python bench/fuzz_long.py [--examples 2000] [--seed 1]

Each hypothesis property runs `--examples` inputs (the data-file properties a tenth of
that: each starts the whole knowledge base); the table counts the inputs tried per
property and the failures found. A failure prints hypothesis's smallest failing input
above the table; fix it in the owning module and add it to the property's explicit cases.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# "tests/test_fuzz.py::name:" then "    - 150 passing, 0 failing, and 5 invalid test cases"
_TEST = re.compile(r"^tests/test_fuzz\.py::(\S+):\s*$")
_PHASE = re.compile(r"- (\d+) passing\b.*?, (\d+) failing\b.*?, (?:and )?(\d+) invalid")


def run(examples: int, seed: int) -> tuple[int, dict[str, list[int]], float, str]:
    env = {**os.environ, "FUZZ_EXAMPLES": str(examples)}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "tests/test_fuzz.py",
        "-q",
        "-p",
        "no:cacheprovider",
        "--hypothesis-show-statistics",
        f"--hypothesis-seed={seed}",
    ]
    started = time.monotonic()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    counts: dict[str, list[int]] = {}
    current = None
    for line in done.stdout.splitlines():
        test = _TEST.match(line.strip())
        if test:
            current = test.group(1)
            counts.setdefault(current, [0, 0, 0])
            continue
        phase = _PHASE.search(line)
        if phase and current is not None:
            for i in range(3):
                counts[current][i] += int(phase.group(i + 1))
    return done.returncode, counts, seconds, done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    code, counts, seconds, output = run(args.examples, args.seed)
    if code != 0:
        print(output[-6000:])
    print("| property | inputs tried | failing | invalid (filtered) |")
    print("|---|---:|---:|---:|")
    for name, (passing, failing, invalid) in sorted(counts.items()):
        print(f"| {name} | {passing + failing} | {failing} | {invalid} |")
    tried = sum(p + f for p, f, _ in counts.values())
    failed = sum(f for _, f, _ in counts.values())
    print(f"| **all** ({seconds:.0f} s, pytest exit {code}) | {tried} | {failed} | |")
    return code


if __name__ == "__main__":
    sys.exit(main())
