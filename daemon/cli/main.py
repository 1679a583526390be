"""`ovembed`: serve the API, add models to the store, and talk to a running daemon as `ollama` does."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import orjson

from daemon.cli.client import CliError, call, pull_events
from daemon.cli.humanize import human_time, table
from daemon.cli.progress import PullProgress
from daemon.config import ConfigError, Settings
from modelstore.sizes import human_bytes
from modelstore.spec import RERANK, Fidelity

if TYPE_CHECKING:
    from modelstore.quantize import Candidate

Command = Callable[[argparse.Namespace, Settings], int]


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from daemon.inference.device import DeviceError
    from daemon.serve import serve

    try:
        serve(settings)
    except DeviceError as exc:
        raise CliError(str(exc)) from exc
    return 0


def cmd_create(args: argparse.Namespace, settings: Settings) -> int:
    from modelstore.create import CreateError, create_from_folder
    from modelstore.names import InvalidName, parse_name
    from modelstore.store import ModelStore

    try:
        name = parse_name(args.name)
        store = ModelStore(settings.models_dir)
        record = create_from_folder(
            store,
            name,
            Path(args.source),
            weights=args.weights,
            task=args.task,
            quantize=args.quantize,
            tried=_print_tried if args.quantize else None,
        )
    except (InvalidName, CreateError) as exc:
        raise CliError(str(exc)) from exc
    spec = record.spec
    kind = "reranker" if spec.task == RERANK else f"{spec.dimension} dimensions, {spec.pooling} pooling"
    note = spec.context_note()
    context = f"{spec.context_length} ({note})" if note else str(spec.context_length)
    stored = "Q8_0 (int8 compute)" if spec.quantization else f"{spec.precision} weights"
    print(
        f"created {record.name.display}: {spec.architecture}, {kind}, context {context}, "
        f"{stored}, {human_bytes(record.size)}"
    )
    if spec.fidelity is not None:
        print(_fidelity_line(spec.fidelity))
    return 0


def _fidelity_line(fidelity: Fidelity) -> str:
    kept = f"; {fidelity.kept_in_float}" if fidelity.kept_in_float else ""
    return (
        f"int8 against fp32 on {fidelity.inputs} held-out inputs: worst {fidelity.measure} {fidelity.worst}, "
        f"mean {fidelity.mean}; {fidelity.speedup:.2f}x the unquantized model's speed on {fidelity.machine}{kept}"
    )


def _print_tried(candidate: Candidate) -> None:
    if candidate.worst is None:
        print(f"quantizing to Q8_0, {candidate.kept_in_float}", flush=True)
    else:
        print(f"  against fp32: {candidate.worst:.5f} worst, {candidate.mean:.5f} mean", flush=True)


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    """Hash each model's files against its digest, in the store directly: no daemon needed."""
    from modelstore.names import InvalidName, parse_name
    from modelstore.store import ModelStore

    store = ModelStore(settings.models_dir)
    try:
        names = [parse_name(n) for n in args.names]
    except InvalidName as exc:
        raise CliError(str(exc)) from exc
    records = [store.get(n) for n in names] if names else store.list()
    damaged = 0
    for name, record in zip(names or [r.name for r in records], records, strict=True):
        if record is None:
            print(f"{name.display}: not found", file=sys.stderr)
            damaged += 1
            continue
        problem = store.verify(record)
        if problem is None:
            print(f"{record.name.display}: ok")
        else:
            damaged += 1
            print(f"{record.name.display}: damaged, {problem}; pull or create it again, or `ovembed rm` it")
    return 1 if damaged else 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    models = call(settings, "GET", "/api/tags").json()["models"]
    rows = [["NAME", "ID", "SIZE", "MODIFIED"]]
    for m in models:
        modified = human_time(datetime.fromisoformat(m["modified_at"]))
        rows.append([m["name"], m["digest"][:12], human_bytes(m["size"]), modified])
    print(table(rows))
    return 0


def cmd_ps(args: argparse.Namespace, settings: Settings) -> int:
    models = call(settings, "GET", "/api/ps").json()["models"]
    rows = [["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]]
    for m in models:
        processor = "100% GPU" if m["size_vram"] and m["size_vram"] == m["size"] else "100% CPU"
        expires = datetime.fromisoformat(m["expires_at"])
        until = "Stopping..." if expires <= datetime.now(expires.tzinfo) else human_time(expires)
        rows.append([m["name"], m["digest"][:12], human_bytes(m["size"]), processor, str(m["context_length"]), until])
    print(table(rows))
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    info = call(settings, "POST", "/api/show", {"model": args.name}).json()
    model_info, details = info["model_info"], info["details"]
    arch = model_info["general.architecture"]
    model_rows = [
        ["architecture", arch],
        ["parameters", details["parameter_size"]],
        ["context length", str(model_info[f"{arch}.context_length"])],
        ["embedding length", str(model_info[f"{arch}.embedding_length"])],
        ["quantization", details["quantization_level"]],
        ["pooling", model_info["ovembed.pooling"]],
        ["source", model_info["ovembed.source"]],
    ]
    measured = {k: v for k, v in model_info.items() if k.startswith("ovembed.int8.")}
    model_rows += [[k.removeprefix("ovembed.").replace("_", " "), str(v)] for k, v in measured.items()]
    sections = [
        ("Model", model_rows),
        ("Capabilities", [[c] for c in info["capabilities"]]),
        ("Parameters", [line.split(None, 1) for line in info.get("parameters", "").splitlines()]),
    ]
    for title, rows in sections:
        if rows:
            print(f"  {title}")
            print("\n".join("    " + line for line in table(rows).splitlines()))
            print()
    return 0


def cmd_rm(args: argparse.Namespace, settings: Settings) -> int:
    for name in args.names:
        call(settings, "DELETE", "/api/delete", {"model": name})
        print(f"deleted '{name}'")
    return 0


def cmd_cp(args: argparse.Namespace, settings: Settings) -> int:
    call(settings, "POST", "/api/copy", {"source": args.source, "destination": args.destination})
    print(f"copied '{args.source}' to '{args.destination}'")
    return 0


def cmd_embed(args: argparse.Namespace, settings: Settings) -> int:
    body: dict[str, Any] = {"model": args.model, "input": args.texts, "truncate": not args.no_truncate}
    if args.dimensions:
        body["dimensions"] = args.dimensions
    embeddings = call(settings, "POST", "/api/embed", body).json()["embeddings"]
    sys.stdout.buffer.write(orjson.dumps(embeddings) + b"\n")
    return 0


def cmd_pull(args: argparse.Namespace, settings: Settings) -> int:
    """Stream /api/pull into Ollama's progress display; an `error` line or a stream without `success` fails."""
    if args.prune:
        _prune_downloads(settings)
    elif args.name is None:
        raise CliError("pull needs a MODEL, or --prune")
    if args.name is None:
        return 0
    name = _quantized_name(args.name, args.quantize) if args.quantize else args.name
    progress = PullProgress(sys.stderr, is_terminal=sys.stderr.isatty())
    succeeded = False
    try:
        with progress.animated():
            for event in pull_events(settings, name):
                progress.update(event)
                succeeded = succeeded or event.get("status") == "success"
    finally:
        progress.finish()
    if not succeeded:
        raise CliError("the pull stream ended without success")
    return 0


def _quantized_name(name: str, level: str) -> str:
    """The name whose tag asks for int8 (`all-minilm:l6-v2` -> `all-minilm:l6-v2-q8_0`), as /api/pull takes it,
    so a pull from any client can ask the same."""
    from modelstore.quantize import QuantizeError, quantization_level

    try:
        suffix = quantization_level(level)
    except QuantizeError as exc:
        raise CliError(str(exc)) from exc
    base, colon, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "latest")
    if name.lower().startswith("hf.co/") and colon and tag.lower() != "latest":
        raise CliError(f"an int8 pull of a hf.co repo takes its main revision: pull {base}:{suffix}")
    return f"{base}:{suffix}" if tag.lower() == "latest" else f"{base}:{tag}-{suffix}"


def _prune_downloads(settings: Settings) -> None:
    """In the store directly, like verify: the daemon may be stopped, and a running pull holds its files."""
    from modelstore.downloads import prune
    from modelstore.store import ModelStore

    removed, in_use = prune(ModelStore(settings.models_dir).layout)
    for kept in removed:
        print(f"removed {human_bytes(kept.size)} downloaded for hf.co/{kept.repo}")
    for kept in in_use:
        print(f"kept {human_bytes(kept.size)} downloaded for hf.co/{kept.repo}: a pull of it is running")
    if not removed and not in_use:
        print("no downloads are kept")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ovembed", description="Ollama's embedding API on OpenVINO.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Command, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    add("serve", cmd_serve, "Start the daemon (OLLAMA_HOST, OVEMBED_MODELS, OVEMBED_DEVICE)")
    create = add("create", cmd_create, "Add a model from a sentence-transformers folder (IR, ONNX or safetensors)")
    create.add_argument("name")
    create.add_argument("--from", dest="source", required=True, metavar="DIR")
    create.add_argument(
        "--weights",
        choices=("fp16", "fp32", "int8", "int4"),
        help="stored weights: as the source has them by default, fp16 for a safetensors checkpoint; from a "
        "checkpoint, int8 (weight matrices per output channel) or int4 (per group of 32 inputs)",
    )
    create.add_argument(
        "--quantize",
        "-q",
        metavar="LEVEL",
        help="q8_0 (or int8): the network computes in int8, calibrated here and refused unless its vectors stay "
        "within 0.99 worst and 0.998 mean cosine of its fp32 network (needs the quantize extra: NNCF)",
    )
    create.add_argument(
        "--task",
        choices=("embed", "rerank"),
        help="rerank makes a language model (Qwen3-Reranker) a reranker; a cross-encoder is one by its config",
    )
    pull = add("pull", cmd_pull, "Pull a model through the daemon")
    pull.add_argument("name", metavar="MODEL", nargs="?")
    pull.add_argument(
        "--prune",
        action="store_true",
        help="first remove the files unfinished pulls kept for resuming (those of a pull still running stay)",
    )
    pull.add_argument(
        "--quantize",
        "-q",
        metavar="LEVEL",
        help="q8_0: pull the model made int8, stored as MODEL's tag with -q8_0 (all-minilm -> all-minilm:q8_0); "
        "any client can pull that name itself",
    )
    add("list", cmd_list, "List models")
    add("ps", cmd_ps, "List loaded models")
    show = add("show", cmd_show, "Show a model's details")
    show.add_argument("name")
    rm = add("rm", cmd_rm, "Remove models")
    rm.add_argument("names", nargs="+", metavar="MODEL")
    verify = add("verify", cmd_verify, "Check stored models' files against their digests (all models by default)")
    verify.add_argument("names", nargs="*", metavar="MODEL")
    cp = add("cp", cmd_cp, "Copy a model")
    cp.add_argument("source")
    cp.add_argument("destination")
    embed = add("embed", cmd_embed, "Print embeddings of TEXTs as JSON")
    embed.add_argument("model")
    embed.add_argument("texts", nargs="+", metavar="TEXT")
    embed.add_argument("--dimensions", type=int, default=0)
    embed.add_argument("--no-truncate", action="store_true")
    return parser


def _fail(message: str) -> NoReturn:
    print(f"Error: {message}", file=sys.stderr)
    sys.exit(1)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.handler(args, Settings.from_env())
    except (CliError, ConfigError) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        return 130
