"""One candidate precision of `auto`, tried in a child process.

An OpenVINO plugin can die outright on a network in a precision it was never tested with (seen here: SIGFPE
compiling a Gemma3 network in bf16 on a CPU with several streams). Tried in a child, such a crash fails that
candidate and nothing else; the daemon then compiles the precision chosen, from the compile cache the child
has just filled.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from daemon.inference.precision import Probe
from modelstore.store import ModelRecord

# The child's entry point, by name: it imports the engine, which imports this module.
CHILD = "daemon.inference.precision_child"
# Generous: probing a large model on a small CPU takes a while, and a hung child must not hang a load forever.
_TIMEOUT_SECONDS = 900.0


class TrialFailed(RuntimeError):
    """The candidate could not be compiled or run; the message says how the child ended."""


def run_trial(record: ModelRecord, device: str, precision: str, hint: str, cache_dir: Path | None) -> Probe:
    """The probe vectors of `record` compiled in `precision`, and its time against fp32's, measured in a child
    process."""
    request = {
        "manifest": record.to_manifest(),
        "path": str(record.path),
        "device": device,
        "precision": precision,
        "hint": hint,
        "cache_dir": str(cache_dir) if cache_dir is not None else None,
    }
    try:
        done = subprocess.run(
            [sys.executable, "-m", CHILD],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise TrialFailed(f"gave no answer within {_TIMEOUT_SECONDS:.0f} s") from exc
    if done.returncode != 0:
        ended = (
            f"crashed with {signal.Signals(-done.returncode).name}"
            if done.returncode < 0
            else f"exited with {done.returncode}"
        )
        last = next((line for line in reversed(done.stderr.splitlines()) if line.strip()), "")
        raise TrialFailed(f"{ended}: {last}" if last else ended)
    answer = json.loads(done.stdout)
    if answer["precision"] != precision:  # it overflowed while probed, and pinned itself to fp32
        raise TrialFailed(f"gave non-finite vectors in {precision}")
    return Probe(
        np.array(answer["batch"]),
        np.array(answer["alone"]),
        float(answer["seconds"]),
        float(answer["slowdown"]),
        int(answer["runs"]),
    )
