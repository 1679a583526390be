"""The child process of one precision trial: compile the model in the precision asked, probe it, answer JSON.

Run by precision_trial.run_trial as `python -m daemon.inference.precision_child`, the request on stdin.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from daemon.inference.engine import Engine, probe_model
from modelstore.store import ModelRecord


def main() -> None:
    request = json.loads(sys.stdin.read())
    record = ModelRecord.from_manifest(request["manifest"], Path(request["path"]))
    cache = request["cache_dir"]
    engine = Engine(request["device"], request["precision"], request["hint"], Path(cache) if cache else None)
    model = engine.load(record)
    measured = probe_model(model)
    answer = {
        "precision": model.precision,
        "seconds": measured.seconds,
        "batch": measured.batch.tolist(),
        "alone": measured.alone.tolist(),
    }
    sys.stdout.write(json.dumps(answer))


if __name__ == "__main__":
    main()
