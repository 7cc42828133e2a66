"""TOML file -> frozen, validated config objects. The only package that reads the file.

Every mistake becomes one ``ConfigError`` naming the file and the key
(``blink.rate_limit``, ``sinks[2].url``); unknown keys are errors so a typo is
never silently ignored. Durations are seconds in the file and ``*_s`` here.

    model.py   the config objects (frozen dataclasses; secrets masked in repr)
    table.py   reading one TOML table: typed values, URLs, secret files and variables
    load.py    the file, section by section, into one ``Config``
    show.py    the effective configuration as TOML, for ``check-config``
"""

from __future__ import annotations

from watcher.config.ids import split_execution
from watcher.config.load import default_config_path, load_config, parse_config
from watcher.config.model import (
    DEFAULT_BASE_URL,
    DEFAULT_CONFIG_PATH,
    DEFAULT_TERMINAL_STATES,
    JOURNAL_MODES,
    LOG_LEVELS,
    BlinkConfig,
    Config,
    DiscoverRule,
    JournalMode,
    LogSinkConfig,
    PollConfig,
    Secret,
    ServerConfig,
    SinkConfig,
    WebhookSinkConfig,
    accepts,
)
from watcher.config.show import effective_config_toml
from watcher.config.table import redact_url, url_origin

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_TERMINAL_STATES",
    "JOURNAL_MODES",
    "LOG_LEVELS",
    "BlinkConfig",
    "Config",
    "DiscoverRule",
    "JournalMode",
    "LogSinkConfig",
    "PollConfig",
    "Secret",
    "ServerConfig",
    "SinkConfig",
    "WebhookSinkConfig",
    "accepts",
    "default_config_path",
    "effective_config_toml",
    "load_config",
    "parse_config",
    "redact_url",
    "split_execution",
    "url_origin",
]
