"""The figures of docs/reliability.md, from one command: `make reliability` (or run this file).

    .venv/bin/python tests/reliability/figures.py [kills=20] [load_clients=64] [per_client=10]

Runs, in order: the bad-input corpus (command line, config, data files, HTTP bodies) and the
server's 20 MB-body test, counting cases handled / tried from pytest's JUnit report; the kill
harness with LMLAB_RELIABILITY_KILLS=kills; `bench/serve.py mode=load` (64 clients × 10 mixed
requests). Prints a table, then one JSON object (the bench convention).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ["tests/reliability/test_corpus_cli.py", "tests/reliability/test_corpus_http.py"]
SERVER = ["tests/test_server.py", "-k", "malformed or 20mb"]


def pytest(args: list[str], figures: Path, junit: Path, **env: str) -> dict[str, int]:
    """Run pytest; {'tried', 'handled', 'failed', 'skipped'} from its JUnit XML."""
    cmd = [sys.executable, "-m", "pytest", *args, "-p", "no:cacheprovider", "-q", "-m", "",
           f"--junitxml={junit}"]
    subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", "LMLAB_RELIABILITY_FIGURES": str(figures),
                                       **env}, check=False)
    cases = ET.parse(junit).getroot().iter("testcase")
    counts = {"tried": 0, "handled": 0, "failed": 0, "skipped": 0}
    for case in cases:
        kinds = {child.tag for child in case}
        counts["tried"] += 1
        if "skipped" in kinds:
            counts["skipped"] += 1
        elif kinds & {"failure", "error"}:
            counts["failed"] += 1
        else:
            counts["handled"] += 1
    return counts


def main() -> None:
    opts = {"kills": 20, "load_clients": 64, "per_client": 10}
    for arg in sys.argv[1:]:
        key, _, value = arg.partition("=")
        if key not in opts:
            raise SystemExit(f"unknown option {key} (options: {', '.join(opts)})")
        opts[key] = int(value)
    with tempfile.TemporaryDirectory() as tmp:
        figures = Path(tmp)
        corpus = pytest(CORPUS, figures, figures / "corpus.xml")
        server = pytest(SERVER, figures, figures / "server.xml")
        kills_run = pytest(["tests/reliability/test_kill_resume.py"], figures, figures / "kills.xml",
                           LMLAB_RELIABILITY_KILLS=str(opts["kills"]))
        big = json.loads((figures / "big_body.json").read_text()) if (figures / "big_body.json").exists() else {}
        kills = json.loads((figures / "kills.json").read_text()) if (figures / "kills.json").exists() else {}
    load_cmd = [sys.executable, "bench/serve.py", "mode=load", f"load_clients={opts['load_clients']}",
                f"per_client={opts['per_client']}", "hidden=64", "layers=2", "vocab_size=1024", "max_tokens=16"]
    proc = subprocess.run(load_cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    load = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 and proc.stdout.strip() else {}
    result = {
        "bad_inputs_handled": corpus["handled"], "bad_inputs_tried": corpus["tried"] - corpus["skipped"],
        "kills_survived": kills.get("survived"), "kills_attempted": kills.get("kills"),
        "kill_episodes": kills.get("episodes"), "kill_points": kills.get("plans"),
        "kill_mismatches": len(kills.get("mismatches", [])) if kills else None,
        "unloadable_checkpoints": len(kills.get("unloadable", [])) if kills else None,
        "leftovers": len(kills.get("leftovers", [])) if kills else None,
        "half_finished": len(kills.get("half_finished", [])) if kills else None,
        "kill_harness_passed": kills_run["failed"] == 0 and kills_run["handled"] == 1,
        "big_body_health_median_ms": round(big["health_median_ms"], 1) if big else None,
        "big_body_health_max_ms": round(big["health_max_ms"], 1) if big else None,
        "big_body_well_formed_answered": big.get("well_formed_answered"), "big_body_well_formed_sent": big.get("well_formed_sent"),
        "big_body_rss_before_mb": round(big["rss_before_mb"], 1) if big else None,
        "big_body_rss_after_mb": round(big["rss_after_mb"], 1) if big else None,
        "server_tests_passed": server["failed"] == 0 and server["handled"] > 0,
        "load_answered": load.get("answered"), "load_sent": load.get("sent"), "load_disconnected": load.get("disconnected"),
        "load_latency_p50_s": load.get("latency_p50_s"), "load_latency_p99_s": load.get("latency_p99_s"),
        "load_rss_before_mb": load.get("rss_before_mb"), "load_rss_after_mb": load.get("rss_after_mb"),
        "load_params": load.get("params"),
    }
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
