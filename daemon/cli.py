"""`ovembed`: serve the API, add models to the store, and talk to a running daemon as `ollama` does."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import httpx
import orjson

from daemon.config import Settings
from daemon.humanize import human_bytes, human_time, table

Command = Callable[[argparse.Namespace, Settings], int]


class CliError(Exception):
    """Printed as `Error: ...` with exit status 1, as the ollama CLI does."""


def _client(settings: Settings) -> httpx.Client:
    return httpx.Client(base_url=settings.listen.base_url, timeout=httpx.Timeout(600.0, connect=5.0))


def _call(settings: Settings, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    """One request to the daemon; any error answer becomes the daemon's own message."""
    try:
        with _client(settings) as client:
            response = client.request(method, path, content=orjson.dumps(body) if body is not None else None)
    except httpx.TransportError as exc:
        raise CliError(
            f"could not connect to ovembed at {settings.listen.base_url} ({exc}); is `ovembed serve` running?"
        ) from exc
    if response.status_code >= 400:
        try:
            message = response.json().get("error", response.text)
        except ValueError:
            message = response.text
        raise CliError(str(message))
    return response


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from daemon.app import create_app
    from daemon.device import DeviceError
    from daemon.services import Services

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # huggingface_hub's HTTP client logs every request at INFO; pulls report their own progress.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    try:
        services = Services.start(settings)
    except DeviceError as exc:
        raise CliError(str(exc)) from exc
    host = settings.listen.host or "0.0.0.0"
    uvicorn.run(create_app(services), host=host, port=settings.listen.port, log_level="info", access_log=False)
    return 0


def cmd_create(args: argparse.Namespace, settings: Settings) -> int:
    from modelstore.create import CreateError, create_from_folder
    from modelstore.names import InvalidName, parse_name
    from modelstore.store import ModelStore

    try:
        name = parse_name(args.name)
        record = create_from_folder(ModelStore(settings.models_dir), name, Path(args.source))
    except (InvalidName, CreateError) as exc:
        raise CliError(str(exc)) from exc
    spec = record.spec
    print(
        f"created {record.name.display}: {spec.architecture}, {spec.dimension} dimensions, "
        f"{spec.pooling} pooling, context {spec.context_length}, {spec.precision} weights, "
        f"{human_bytes(record.size)}"
    )
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    models = _call(settings, "GET", "/api/tags").json()["models"]
    rows = [["NAME", "ID", "SIZE", "MODIFIED"]]
    for m in models:
        modified = human_time(datetime.fromisoformat(m["modified_at"]))
        rows.append([m["name"], m["digest"][:12], human_bytes(m["size"]), modified])
    print(table(rows))
    return 0


def cmd_ps(args: argparse.Namespace, settings: Settings) -> int:
    models = _call(settings, "GET", "/api/ps").json()["models"]
    rows = [["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]]
    for m in models:
        processor = "100% GPU" if m["size_vram"] and m["size_vram"] == m["size"] else "100% CPU"
        expires = datetime.fromisoformat(m["expires_at"])
        until = "Stopping..." if expires <= datetime.now(expires.tzinfo) else human_time(expires)
        rows.append([m["name"], m["digest"][:12], human_bytes(m["size"]), processor, str(m["context_length"]), until])
    print(table(rows))
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    info = _call(settings, "POST", "/api/show", {"model": args.name}).json()
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
    model_rows += [
        [k.removeprefix("ovembed."), str(v)] for k, v in model_info.items() if k.startswith("ovembed.accuracy")
    ]
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
        _call(settings, "DELETE", "/api/delete", {"model": name})
        print(f"deleted '{name}'")
    return 0


def cmd_cp(args: argparse.Namespace, settings: Settings) -> int:
    _call(settings, "POST", "/api/copy", {"source": args.source, "destination": args.destination})
    print(f"copied '{args.source}' to '{args.destination}'")
    return 0


def cmd_embed(args: argparse.Namespace, settings: Settings) -> int:
    body: dict[str, Any] = {"model": args.model, "input": args.texts, "truncate": not args.no_truncate}
    if args.dimensions:
        body["dimensions"] = args.dimensions
    embeddings = _call(settings, "POST", "/api/embed", body).json()["embeddings"]
    sys.stdout.buffer.write(orjson.dumps(embeddings) + b"\n")
    return 0


def cmd_pull(args: argparse.Namespace, settings: Settings) -> int:
    """Stream /api/pull into Ollama's progress display; an `error` line or a stream without `success` fails."""
    from daemon.progress import PullProgress

    base_url = settings.listen.base_url
    progress = PullProgress(sys.stderr, is_terminal=sys.stderr.isatty())
    succeeded = False
    try:
        with (
            httpx.Client(base_url=base_url, timeout=httpx.Timeout(None, connect=5.0)) as client,
            client.stream("POST", "/api/pull", json={"model": args.name, "stream": True}) as response,
        ):
            if response.status_code >= 400:
                response.read()
                try:
                    message = response.json().get("error", response.text)
                except ValueError:
                    message = response.text
                raise CliError(str(message))
            with progress.animated():
                for line in response.iter_lines():
                    if not line.strip():
                        continue
                    try:
                        event = orjson.loads(line)
                    except orjson.JSONDecodeError as exc:
                        raise CliError(f"unexpected line from ovembed: {line!r}") from exc
                    if "error" in event:
                        raise CliError(str(event["error"]))
                    progress.update(event)
                    succeeded = succeeded or event.get("status") == "success"
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise CliError(f"could not connect to ovembed at {base_url} ({exc}); is `ovembed serve` running?") from exc
    except httpx.TransportError as exc:
        raise CliError(f"lost the connection to ovembed at {base_url} during the pull ({exc})") from exc
    finally:
        progress.finish()
    if not succeeded:
        raise CliError("the pull stream ended without success")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ovembed", description="Ollama's embedding API on OpenVINO.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Command, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    add("serve", cmd_serve, "Start the daemon (OLLAMA_HOST, OVEMBED_MODELS, OVEMBED_DEVICE)")
    create = add("create", cmd_create, "Add a model from a sentence-transformers folder")
    create.add_argument("name")
    create.add_argument("--from", dest="source", required=True, metavar="DIR")
    pull = add("pull", cmd_pull, "Pull a model through the daemon")
    pull.add_argument("name", metavar="MODEL")
    add("list", cmd_list, "List models")
    add("ps", cmd_ps, "List loaded models")
    show = add("show", cmd_show, "Show a model's details")
    show.add_argument("name")
    rm = add("rm", cmd_rm, "Remove models")
    rm.add_argument("names", nargs="+", metavar="MODEL")
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
    except CliError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
