"""The child process of one precision trial: compile the model in the precision asked and in fp32, probe it,
time the two in turn, answer JSON.

Run by precision_trial.run_trial as `python -m daemon.inference.precision_child`, the request on stdin.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from daemon.inference.engine import Engine, probe_model, time_against
from modelstore.store import ModelRecord


def main() -> None:
    request = json.loads(sys.stdin.read())
    record = ModelRecord.from_manifest(request["manifest"], Path(request["path"]))
    cache = request["cache_dir"]
    folder = Path(cache) if cache else None
    model = Engine(request["device"], request["precision"], request["hint"], folder).load(record)
    measured = probe_model(model)
    answer: dict[str, object] = {
        "precision": model.precision,
        "batch": measured.batch.tolist(),
        "alone": measured.alone.tolist(),
    }
    if model.precision == request["precision"]:  # else it overflowed and pinned itself to fp32: nothing to time
        reference = Engine(request["device"], "fp32", request["hint"], folder).load(record)
        timing = time_against(model, reference)
        answer.update(seconds=timing.seconds, slowdown=timing.slowdown, runs=timing.runs)
    sys.stdout.write(json.dumps(answer))


if __name__ == "__main__":
    main()
