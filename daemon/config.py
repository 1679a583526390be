"""Settings read from the environment, with Ollama's variable names where Ollama has one."""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from daemon.durations import DurationError, keep_alive_seconds, parse_go_duration

log = logging.getLogger(__name__)

DEFAULT_PORT = 11434
DEFAULT_KEEP_ALIVE = 300.0
DEFAULT_MODELS_DIR = Path("~/.ovembed/models")


@dataclass(frozen=True)
class ListenAddress:
    """Where the daemon listens, parsed from OLLAMA_HOST as Ollama's envconfig.Host does."""

    scheme: str
    host: str
    port: int

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def base_url(self) -> str:
        """The URL a client on this machine uses: an all-interfaces bind is reached on loopback."""
        host = self.host if self.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"{self.scheme}://{host}:{self.port}"


def _env(name: str) -> str:
    """Ollama trims spaces and one layer of quotes from every variable."""
    return os.environ.get(name, "").strip().strip("\"'").strip()


def parse_host(value: str) -> ListenAddress:
    """Parse OLLAMA_HOST: `1.2.3.4` gets 11434, `:1234` is every interface, http/https default to 80/443."""
    scheme, sep, hostport = value.partition("://")
    default_port = DEFAULT_PORT
    if not sep:
        scheme, hostport = "http", value
    elif scheme == "http":
        default_port = 80
    elif scheme == "https":
        default_port = 443
    hostport = hostport.split("/", 1)[0]
    host, port_text = _split_host_port(hostport)
    if host is None:
        host, port_text = "127.0.0.1", ""
        bare = hostport.strip("[]")
        try:
            host = str(ipaddress.ip_address(bare))
        except ValueError:
            if hostport:
                host = hostport
    try:
        port = int(port_text)
        if not 0 <= port <= 65535:
            raise ValueError(port_text)
    except ValueError:
        if port_text:
            log.warning("invalid port %r in OLLAMA_HOST, using %d", port_text, default_port)
        port = default_port
    return ListenAddress(scheme=scheme, host=host, port=port)


def _split_host_port(hostport: str) -> tuple[str | None, str]:
    """Go's net.SplitHostPort: None when there is no port part."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or not hostport[end + 1 :].startswith(":"):
            return None, ""
        return hostport[1:end], hostport[end + 2 :]
    if hostport.count(":") != 1:
        return None, ""
    host, _, port = hostport.partition(":")
    return host, port


def parse_keep_alive_env(value: str) -> float:
    """OLLAMA_KEEP_ALIVE: a Go duration or integer seconds; negative is forever; invalid means 5m."""
    if not value:
        return DEFAULT_KEEP_ALIVE
    try:
        seconds = float(int(value))
    except ValueError:
        try:
            seconds = parse_go_duration(value)
        except DurationError:
            log.warning("invalid OLLAMA_KEEP_ALIVE %r, using 5m", value)
            return DEFAULT_KEEP_ALIVE
    return keep_alive_seconds(seconds)


def _int_env(name: str, default: int, minimum: int = 1) -> int:
    """An integer setting; empty or below `minimum` is the default, and so is a typo, with a warning."""
    text = _env(name)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        log.warning("invalid %s %r, using %d", name, text, default)
        return default
    return value if value >= minimum else default


def _upstream() -> str | None:
    """OVEMBED_UPSTREAM, written as OLLAMA_HOST is (`127.0.0.1:11435`, `http://host:port`), as a base URL."""
    text = _env("OVEMBED_UPSTREAM")
    return parse_host(text).base_url if text else None


class ConfigError(ValueError):
    """A setting the daemon cannot start with; the message says which and what to do."""


def _api_key() -> str | None:
    """OVEMBED_API_KEY, or the contents of OVEMBED_API_KEY_FILE (systemd's LoadCredential=) less the whitespace
    around them; neither is no key. Both set, or a file that cannot be read or is empty, is refused."""
    key, path = _env("OVEMBED_API_KEY"), _env("OVEMBED_API_KEY_FILE")
    if key and path:
        raise ConfigError("OVEMBED_API_KEY and OVEMBED_API_KEY_FILE are both set: set only one of them")
    if not path:
        return key or None
    try:
        key = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(f"cannot read the API key from OVEMBED_API_KEY_FILE={path}: {reason}") from exc
    if not key:
        raise ConfigError(f"OVEMBED_API_KEY_FILE={path} is empty: write the key in it, or unset the variable")
    return key


def _on(text: str) -> bool:
    """A yes/no setting, as OLLAMA_DEBUG reads: anything but empty, 0, false, no and off is yes."""
    return text.lower() not in ("", "0", "false", "no", "off")


def _origins() -> tuple[str, ...]:
    extra = [o.strip() for o in _env("OLLAMA_ORIGINS").split(",") if o.strip()]
    return tuple(extra)


@dataclass(frozen=True)
class Settings:
    """Everything the daemon reads from its environment, read once at start; each default is written here."""

    listen: ListenAddress = field(default_factory=lambda: parse_host(""))
    models_dir: Path = field(default_factory=DEFAULT_MODELS_DIR.expanduser)
    keep_alive: float = DEFAULT_KEEP_ALIVE
    max_queue: int = 512
    device: str = "auto"
    precision: str = "auto"
    performance_hint: str = "THROUGHPUT"
    cache_dir: Path | None = None  # None: `cache/` beside the store
    extra_origins: tuple[str, ...] = ()
    # Measured best on a 2-core CPU: 64- and 128-text batches ran 10-25% slower per text.
    batch_tokens: int = 8192
    batch_size: int = 32
    hf_endpoint: str | None = None
    hf_token: str | None = None
    # Generous for indexing jobs (OpenAI allows 2,048 inputs, TEI 32 by default) and bounded in memory: the
    # largest request allowed, 16,384 texts of MiniLM, peaks at the RSS measured in the README.
    max_inputs: int = 16_384
    max_body_bytes: int = 64 << 20
    max_connections: int = 1024
    # Seconds a request head may take to arrive, and the longest pause inside a body (Ollama has no limit).
    read_timeout: int = 30
    # OVEMBED_INFERENCE_TIMEOUT: the least seconds a batch may run before the watchdog abandons it (batcher.py); a
    # 32-text batch of 512 tokens of a large model takes a few seconds on a 2-core CPU, so 30 s is never a slow batch.
    inference_timeout: int = 30
    # Ollama's default on a CPU (3 per GPU there): idle models beyond it unload, least recently used first.
    max_loaded_models: int = 3
    preload: tuple[str, ...] = ()  # OVEMBED_PRELOAD: models loaded at start and kept loaded
    debug: bool = False  # OLLAMA_DEBUG: log at DEBUG, health-check requests included
    # Below systemd's default TimeoutStopSec (90 s) and the unit's own (30 s), so a stop never ends in SIGKILL.
    shutdown_timeout: int = 20
    # OVEMBED_CACHE_MB, 0 for off: at most 44% more than the 292 MB all-MiniLM-L6-v2 idles at, and room for ~70k
    # of its 384-dimension vectors (1,872 bytes each with key and bookkeeping) or ~39k of 768.
    vector_cache_mb: int = 128
    # The token vectors one request may ask for, as float32: two 8,192-token texts of bge-m3 (1,024 wide), or
    # 128k tokens of a 128-wide ColBERT; their JSON is about three times as large, base64 a third larger.
    max_multivector_mb: int = 64
    # OVEMBED_UPSTREAM: the user's own Ollama (moved off 11434), for what ovembed does not serve; None: no upstream.
    upstream: str | None = None
    # OVEMBED_API_KEY (or OVEMBED_API_KEY_FILE): every route but the open ones wants it as a Bearer token; never
    # in a repr, so no log line of the settings can print it.
    api_key: str | None = field(default=None, repr=False)
    metrics_open: bool = False  # OVEMBED_METRICS_OPEN: /metrics answers without the key, for a scraper

    @property
    def compile_cache(self) -> Path:
        return self.cache_dir or self.models_dir.parent / "cache"

    @classmethod
    def from_env(cls) -> Settings:
        """The settings of this environment; a key setting that cannot be used raises ConfigError."""
        default = cls()
        models = _env("OVEMBED_MODELS")
        cache = _env("OVEMBED_CACHE_DIR")
        return cls(
            listen=parse_host(_env("OLLAMA_HOST")),
            models_dir=Path(models).expanduser() if models else default.models_dir,
            keep_alive=parse_keep_alive_env(_env("OLLAMA_KEEP_ALIVE")),
            max_queue=_int_env("OLLAMA_MAX_QUEUE", default.max_queue),
            device=_env("OVEMBED_DEVICE") or default.device,
            precision=(_env("OVEMBED_PRECISION") or default.precision).lower(),
            performance_hint=(_env("OVEMBED_PERFORMANCE_HINT") or default.performance_hint).upper(),
            cache_dir=Path(cache).expanduser() if cache else None,
            extra_origins=_origins(),
            batch_tokens=_int_env("OVEMBED_BATCH_TOKENS", default.batch_tokens),
            batch_size=_int_env("OVEMBED_BATCH_SIZE", default.batch_size),
            hf_endpoint=_env("HF_ENDPOINT") or None,
            hf_token=_env("HF_TOKEN") or None,
            shutdown_timeout=_int_env("OVEMBED_SHUTDOWN_TIMEOUT", default.shutdown_timeout),
            max_inputs=_int_env("OVEMBED_MAX_INPUTS", default.max_inputs),
            max_body_bytes=_int_env("OVEMBED_MAX_BODY_BYTES", default.max_body_bytes),
            max_connections=_int_env("OVEMBED_MAX_CONNECTIONS", default.max_connections),
            read_timeout=_int_env("OVEMBED_READ_TIMEOUT", default.read_timeout),
            inference_timeout=_int_env("OVEMBED_INFERENCE_TIMEOUT", default.inference_timeout),
            vector_cache_mb=_int_env("OVEMBED_CACHE_MB", default.vector_cache_mb, minimum=0),
            max_multivector_mb=_int_env("OVEMBED_MAX_MULTIVECTOR_MB", default.max_multivector_mb),
            upstream=_upstream(),
            max_loaded_models=_int_env("OLLAMA_MAX_LOADED_MODELS", default.max_loaded_models),
            preload=tuple(n.strip() for n in _env("OVEMBED_PRELOAD").split(",") if n.strip()),
            debug=_on(_env("OLLAMA_DEBUG")),
            api_key=_api_key(),
            metrics_open=_on(_env("OVEMBED_METRICS_OPEN")),
        )
