"""Compare the embedded NLU engine with Rasa 3.6 on the held-out set in nlu/tests
(or another with --tests, e.g. --tests tests_blind).

    .venv/bin/python bench/nlu_compare.py [--nlu nlu] [--skip-rasa] [--rasa-python PATH]

Both engines are scored by the same `bot.nlu.evaluate` (crisis recall includes the safety
rules). Each engine runs in its own process so cold start and peak RSS are its own:
- embedded: a worker process loads the cached model (trained beforehand, as after
  `hulpwijzer nlu train`) and parses in-process;
- Rasa: `rasa==3.6.21` in its own Python 3.10 virtualenv (var/rasa-venv, created on first
  run), trained on the same nlu/data with nlu/config.yml and served by `rasa run
  --enable-api`; parse latency therefore includes a localhost HTTP round trip.
If no Python 3.10 is found, the Rasa row says so instead of inventing numbers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.nlu import (  # noqa: E402
    EmbeddedClassifier,
    RasaClassifier,
    evaluate,
    load_training_data,
)

RASA_VERSION = "3.6.21"
LATENCY_ROUNDS = 3


# --------------------------------------------------------------------------- workers


def latencies(classifier: Any, texts: list[str]) -> dict[str, float]:
    """Per-parse wall time over every test message, LATENCY_ROUNDS times; and the CPU time
    of this thread, which a busy machine's scheduler does not inflate (for in-process
    engines only: for Rasa it would only count the HTTP client)."""
    timings: list[float] = []
    cpu: list[float] = []
    for _ in range(LATENCY_ROUNDS):
        for text in texts:
            started, started_cpu = time.perf_counter(), time.thread_time()
            classifier.parse(text)
            cpu.append((time.thread_time() - started_cpu) * 1000)
            timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    cpu.sort()
    return {
        "p50_ms": statistics.median(timings),
        "p99_ms": percentile99(timings),
        "p99_cpu_ms": percentile99(cpu),
    }


def percentile99(sorted_values: list[float]) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * 0.99))]


def quality(classifier: Any, tests: Path) -> dict[str, Any]:
    """Quality of a ready classifier on the held-out data, as `hulpwijzer nlu eval`."""
    data = load_training_data(tests)
    report = evaluate(classifier, data, load_training_data(tests.parent / "data").synonyms)
    return {
        "examples": report.examples,
        "accuracy": report.accuracy,
        "macro_f1": report.macro_f1,
        "crisis_recall": report.crisis_recall,
        "platform_f1": report.entities["platform"].f1 if "platform" in report.entities else None,
        "table": report.format_table(),
    }


# The held-out set, a folder under the NLU folder: "tests", or "tests_blind" (--tests).
TESTS = "tests"


def embedded_worker(nlu_dir: Path, cache_dir: Path) -> None:
    """Runs in a fresh process: first parse as soon as possible, then the measurements."""
    classifier = EmbeddedClassifier.load_or_train(nlu_dir, cache_dir)
    classifier.parse("hoi")
    print("ready", flush=True)
    texts = [example.text for example in load_training_data(nlu_dir / TESTS).examples]
    result: dict[str, Any] = dict(latencies(classifier, texts))
    # peak memory of the engine as the bot uses it, before evaluation adds its own; VmHWM,
    # not ru_maxrss, which Linux carries over from the (bigger) parent across fork+exec
    result["rss_mb"] = tree_peak_rss_mb(os.getpid())
    result["sklearn_loaded"] = "sklearn" in sys.modules
    result.update(quality(classifier, nlu_dir / TESTS))
    result["from_cache"] = classifier.from_cache
    print(json.dumps(result), flush=True)


def run_embedded(nlu_dir: Path) -> dict[str, Any]:
    cache_dir = Path(tempfile.mkdtemp(prefix="nlu-bench-"))
    try:
        started = time.perf_counter()
        trained = EmbeddedClassifier.load_or_train(nlu_dir, cache_dir)
        train_s = time.perf_counter() - started
        assert not trained.from_cache
        command = [sys.executable, __file__, "--embedded-worker", str(nlu_dir), str(cache_dir)]
        command += ["--tests", TESTS]
        started = time.perf_counter()
        with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT) as worker:
            assert worker.stdout is not None
            first = worker.stdout.readline().strip()
            cold_s = time.perf_counter() - started
            if first != "ready":
                raise RuntimeError("embedded worker failed")
            result: dict[str, Any] = json.loads(worker.stdout.readline())
        result.update(cold_s=cold_s, train_s=train_s)
        return result
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)


# --------------------------------------------------------------------------- Rasa


def find_python310(explicit: str | None) -> str | None:
    """A working Python 3.10 (Rasa 3.6 supports 3.8-3.10 only), or None."""
    candidates = [explicit, os.environ.get("RASA_PYTHON"), shutil.which("python3.10")]
    pyenv = Path.home() / ".pyenv" / "versions"
    if pyenv.is_dir():
        candidates += [str(p / "bin" / "python3.10") for p in sorted(pyenv.glob("3.10*"))]
    for candidate in candidates:
        if not candidate:
            continue
        try:
            out = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 10))"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except OSError:
            continue
        if out.returncode == 0 and out.stdout.strip() == "True":
            return candidate
    return None


def ensure_rasa(python: str, venv: Path) -> Path:
    venv = venv.resolve()
    rasa = venv / "bin" / "rasa"
    if rasa.exists():
        return rasa
    print(f"creating {venv} with rasa=={RASA_VERSION} (this downloads ~1 GB) ...", flush=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = str(venv / "bin" / "pip")
    subprocess.run([pip, "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([pip, "install", "-q", f"rasa=={RASA_VERSION}"], check=True)
    return rasa


def rasa_model(rasa: Path, nlu_dir: Path, models: Path, log: Path) -> tuple[Path, float | None]:
    """Train once per version of data+config; returns (model, training seconds or None)."""
    digest = hashlib.sha256()
    for file in [*sorted((nlu_dir / "data").rglob("*.yml")), nlu_dir / "config.yml"]:
        digest.update(file.read_bytes())
    name = f"hulpwijzer-nlu-{digest.hexdigest()[:16]}"
    model = models / f"{name}.tar.gz"
    if model.exists():
        return model, None
    models.mkdir(parents=True, exist_ok=True)
    # rasa may write assistant_id into the config it is given: hand it a copy
    work = Path(tempfile.mkdtemp(prefix="rasa-train-"))
    shutil.copy(nlu_dir / "config.yml", work / "config.yml")
    command = [str(rasa), "train", "nlu", "--nlu", str((nlu_dir / "data").resolve())]
    command += ["--config", "config.yml", "--out", str(models.resolve())]
    command += ["--fixed-model-name", name]
    started = time.perf_counter()
    with log.open("w") as out:
        subprocess.run(
            command, cwd=work, stdout=out, stderr=subprocess.STDOUT, check=True, env=rasa_env()
        )
    shutil.rmtree(work, ignore_errors=True)
    return model, time.perf_counter() - started


def rasa_env() -> dict[str, str]:
    return os.environ | {"RASA_TELEMETRY_ENABLED": "false", "TF_CPP_MIN_LOG_LEVEL": "3"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tree_peak_rss_mb(pid: int) -> float:
    """Sum of VmHWM (peak resident set) over the server process and its children."""
    total_kb = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for each in pids:
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


def run_rasa(nlu_dir: Path, python: str, venv: Path) -> dict[str, Any]:
    rasa = ensure_rasa(python, venv)
    var = ROOT / "var"
    model, train_s = rasa_model(rasa, nlu_dir, var / "rasa-models", var / "rasa-train.log")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(rasa), "run", "--enable-api", "-m", str(model), "-i", "127.0.0.1"]
    command += ["-p", str(port)]
    log = (var / "rasa-run.log").open("w")
    started = time.perf_counter()
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=rasa_env())
    try:
        cold_s = wait_for_first_parse(url, server, started, deadline=600)
        classifier = RasaClassifier(url, timeout=30.0)
        texts = [example.text for example in load_training_data(nlu_dir / TESTS).examples]
        result: dict[str, Any] = dict(latencies(classifier, texts))
        del result["p99_cpu_ms"]  # the client's CPU time says nothing about Rasa
        result.update(quality(classifier, nlu_dir / TESTS))
        result["rss_mb"] = tree_peak_rss_mb(server.pid)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    result.update(cold_s=cold_s, train_s=train_s)
    return result


def wait_for_first_parse(
    url: str, server: subprocess.Popen[bytes], started: float, deadline: float
) -> float:
    """Seconds from `started` (just before the server process was spawned) to an answer."""
    request_body = json.dumps({"text": "hoi"}).encode()
    while time.perf_counter() - started < deadline:
        if server.poll() is not None:
            raise RuntimeError("rasa run exited; see var/rasa-run.log")
        try:
            request = urllib.request.Request(
                f"{url}/model/parse",
                data=request_body,
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 200 and "intent" in json.loads(response.read()):
                    return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("rasa did not answer in time")


# --------------------------------------------------------------------------- table


def row(engine: str, result: dict[str, Any]) -> str:
    train = "cached" if result.get("train_s") is None else f"{result['train_s']:.1f} s"
    cpu = f" (CPU {result['p99_cpu_ms']:.2f} ms)" if "p99_cpu_ms" in result else ""
    return (
        f"| {engine} | {result['accuracy']:.3f} | {result['macro_f1']:.3f} "
        f"| {result['crisis_recall']:.3f} | {_maybe(result.get('platform_f1'))} "
        f"| {result['p50_ms']:.2f} ms | {result['p99_ms']:.2f} ms{cpu} "
        f"| {result['cold_s']:.2f} s | {result['rss_mb']:.0f} MB | {train} |"
    )


def _maybe(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nlu", type=Path, default=ROOT / "nlu")
    parser.add_argument("--skip-rasa", action="store_true")
    parser.add_argument("--rasa-python", help="a Python 3.10 interpreter for the Rasa venv")
    parser.add_argument("--rasa-venv", type=Path, default=ROOT / "var" / "rasa-venv")
    parser.add_argument("--verbose", action="store_true", help="print the full eval reports")
    parser.add_argument("--embedded-worker", nargs=2, metavar=("NLU_DIR", "CACHE"))
    parser.add_argument("--tests", default="tests", help="the held-out folder under --nlu")
    args = parser.parse_args()
    global TESTS
    TESTS = args.tests
    if args.embedded_worker:
        embedded_worker(Path(args.embedded_worker[0]), Path(args.embedded_worker[1]))
        return 0

    nlu_dir = args.nlu.resolve()
    tests = load_training_data(nlu_dir / TESTS)
    train = load_training_data(nlu_dir / "data")
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"data: {len(train.examples)} training, {len(tests.examples)} test examples, "
          f"{len(train.intents)} intents; {os.cpu_count()} CPUs, load average {load}")  # fmt: skip
    rows = []
    embedded = run_embedded(nlu_dir)
    rows.append(row("embedded (scikit-learn)", embedded))
    if args.verbose:
        print(embedded["table"])
    if args.skip_rasa:
        rows.append(f"| Rasa {RASA_VERSION} (DIET) | skipped (--skip-rasa) ||||||||")
    else:
        python = find_python310(args.rasa_python)
        if python is None and not (args.rasa_venv / "bin" / "rasa").exists():
            rows.append(
                f"| Rasa {RASA_VERSION} (DIET) | not available (needs Python 3.10) ||||||||"
            )
        else:
            rasa = run_rasa(nlu_dir, python or sys.executable, args.rasa_venv)
            rows.append(row(f"Rasa {RASA_VERSION} (DIET, via HTTP)", rasa))
            if args.verbose:
                print(rasa["table"])
    print()
    print("| engine | accuracy | macro-F1 | crisis recall | platform F1 | p50 parse "
          "| p99 parse | cold start | peak RSS | training |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
