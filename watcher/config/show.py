"""``check-config`` output: the effective configuration as TOML, secrets redacted."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from watcher.config.model import Config, LogSinkConfig, SinkConfig
from watcher.config.table import redact_url, url_origin
from watcher.models import format_key

# --- showing ------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Mapping):
        inner = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    if isinstance(value, Iterable) and not isinstance(value, str):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return _toml_string(str(value))


def _toml_string(text: str) -> str:
    # TOML basic strings forbid control characters other than tab, escaped or not.
    escaped = "".join(
        f"\\u{ord(c):04x}" if (c < " " and c != "\t") or c == "\x7f" else c
        for c in text.replace("\\", "\\\\").replace('"', '\\"')
    )
    return f'"{escaped}"'


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else _toml_value(key)


def _section_lines(header: str, items: Mapping[str, Any]) -> list[str]:
    lines = [header]
    lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in items.items() if v is not None]
    return [*lines, ""]


def effective_config_toml(config: Config) -> str:
    """The effective configuration as TOML, every secret redacted (``check-config``)."""
    b = config.blink
    p = config.poll
    out: list[str] = [f"# effective configuration of {config.file}", ""]
    out += _section_lines(
        "[blink]",
        {
            "base_url": redact_url(b.base_url),
            "workspace_id": b.workspace_id,
            "api_key": f"<redacted, from {b.api_key_source}>",
            "with_apply_view": b.with_apply_view,
            "request_timeout": b.request_timeout_s,
            "max_concurrency": b.max_concurrency,
            "rate_limit": b.rate_limit_per_s,
            "retry_attempts": b.retry_attempts,
            "retry_backoff": b.retry_backoff_s,
            "retry_backoff_max": b.retry_backoff_max_s,
            "max_response_bytes": b.max_response_bytes,
            "allow_insecure_http": b.allow_insecure_http,
        },
    )
    out += _section_lines(
        "[poll]",
        {
            "interval": p.interval_s,
            "max_interval": p.max_interval_s,
            "backoff": p.backoff,
            "jitter": p.jitter,
            "max_watch": p.max_watch_s,
            "not_found_grace": p.not_found_grace,
            "terminal_states": sorted(p.terminal_states),
        },
    )
    noun = "execution" if len(config.executions) == 1 else "executions"
    out += [f"[watch]  # {len(config.executions)} {noun}", f"max_watches = {config.max_watches}"]
    out += ["executions = ["]
    out += [f"  {_toml_string(format_key(key))}," for key in config.executions] + ["]", ""]
    shared = config.shared_state
    if shared is None:
        state: dict[str, Any] = {"path": str(config.state_path)}
    else:
        source = shared.password_source
        state = {
            "url": shared.url,  # never holds a password (refused when loading)
            "password": None if source is None else f"<redacted, from {source}>",
            "lease": shared.lease_s,
            "renew": shared.renew_s,
            "claim_batch": shared.claim_batch,
        }
    out += _section_lines("[state]", {**state, "keep_reported": config.keep_reported_s})
    out += _section_lines(
        "[logging]",
        {"level": config.log_level, "format": config.log_format, "journal": config.log_journal},
    )
    if config.server is not None:
        s = config.server
        host = f"[{s.host}]" if ":" in s.host else s.host
        token = None if s.api_token_source is None else f"<redacted, from {s.api_token_source}>"
        out += _section_lines(
            "[server]",
            {"listen": f"{host}:{s.port}", "allow_remote": s.allow_remote, "api_token": token},
        )
    for rule in config.discover:
        out += _section_lines(
            "[[discover]]",
            {
                "name": rule.name,
                "workspace_id": rule.workspace_id,
                "playbook_ids": list(rule.playbook_ids) or None,
                "trigger_types": list(rule.trigger_types) or None,
                "start": f"{rule.start_back_s:g}s" if rule.start_back_s else "now",
                "interval": rule.interval_s,
                "overlap": rule.overlap_s,
            },
        )
    for sink in config.sinks:
        out += _section_lines("[[sinks]]", _sink_items(sink))
    return "\n".join(out).rstrip() + "\n"


def _sink_items(sink: SinkConfig) -> dict[str, Any]:
    states = None if sink.states is None else sorted(sink.states)
    items = _sink_kind_items(sink, states)
    items["events"] = sorted(sink.events)
    return items


def _sink_kind_items(sink: SinkConfig, states: list[str] | None) -> dict[str, Any]:
    if isinstance(sink, LogSinkConfig):
        path = None if sink.path is None else str(sink.path)
        return {"type": "log", "name": sink.name, "path": path, "states": states}
    return {
        "type": "webhook",
        "name": sink.name,
        "url": f"<redacted, from {sink.url_source}>" if sink.url_source else url_origin(sink.url),
        "secret": None if sink.secret_source is None else f"<redacted, from {sink.secret_source}>",
        "timeout": sink.timeout_s,
        "max_attempts": sink.max_attempts,
        "backoff_initial": sink.backoff_initial_s,
        "backoff_max": sink.backoff_max_s,
        "max_in_flight": sink.max_in_flight,
        "headers": {k: "<redacted>" for k, _ in sink.headers} or None,
        "states": states,
        "allow_insecure_http": sink.allow_insecure_http,
    }
