"""The command line: arguments -> load config -> run the command -> exit code.

Exit codes (defined in ``watcher.errors``): 0 success, 1 runtime failure, 2
usage error, 78 configuration error (EX_CONFIG), 130 interrupted.

Each command's module is imported only when that command runs, so
``blink-watcher run`` loads the daemon and none of the terminal commands, the
renderer or the simulator.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

from watcher import __version__
from watcher.config import (
    Config,
    default_config_path,
    effective_config_toml,
    load_config,
    split_execution,
)
from watcher.config.paths import state_base
from watcher.config.table import Table, read_secret
from watcher.errors import (
    EX_CONFIG,
    EX_FAILURE,
    EX_INTERRUPTED,
    EX_OK,
    EX_USAGE,
    ConfigError,
    StoreError,
)


def _config_arg(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=None if not required else argparse.SUPPRESS,
        help="config file (default: $BLINK_WATCHER_CONFIG, else /etc/blink-watcher/config.toml)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blink-watcher",
        description="Watch Blink executions until they end; deliver how they ended.",
    )
    parser.add_argument("--version", action="version", version=f"blink-watcher {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon until SIGTERM/SIGINT")
    _config_arg(run)
    run.add_argument(
        "--exit-when-done",
        action="store_true",
        help="exit 0 once every execution has its event and every delivery is settled",
    )

    check = sub.add_parser("check-config", help="validate and print the effective config")
    _config_arg(check)

    watch = sub.add_parser("watch", help="watch executions in the foreground")
    _config_arg(watch, required=False)
    watch.add_argument("ids", nargs="+", metavar="ID", help="EXEC_ID or WS_ID/EXEC_ID")
    watch.add_argument("--workspace", help="workspace for IDs given without one")
    watch.add_argument("--base-url", help="Blink API base URL")
    watch.add_argument("--interval", type=float, help="seconds between polls")

    status = sub.add_parser("status", help="what the daemon is watching and delivering")
    _config_arg(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    _state_arg(status)

    deliveries = sub.add_parser("deliveries", help="pending and dead-lettered deliveries")
    _config_arg(deliveries)
    deliveries.add_argument(
        "--retry-dead", action="store_true", help="queue every dead letter again"
    )
    deliveries.add_argument("--json", action="store_true", help="machine-readable output")
    _state_arg(deliveries)

    add = sub.add_parser("add", help="hand executions to the running daemon (watch API)")
    _config_arg(add, required=False)
    add.add_argument("ids", nargs="+", metavar="ID", help="EXEC_ID or WS_ID/EXEC_ID")
    add.add_argument(
        "--wait",
        action="store_true",
        help="wait until each has ended; exit 0 if all ended Completed, 1 otherwise",
    )
    add.add_argument("--json", action="store_true", help="print the daemon's answer as JSON")

    remove = sub.add_parser("remove", help="stop watching executions in the running daemon")
    _config_arg(remove, required=False)
    remove.add_argument("ids", nargs="+", metavar="ID", help="EXEC_ID or WS_ID/EXEC_ID")
    remove.add_argument("--json", action="store_true", help="machine-readable output")

    demo = sub.add_parser("demo", help="the whole product against a simulated Blink API")
    demo.add_argument("--keep", action="store_true", help="keep the demo's working directory")
    return parser


def _state_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state",
        metavar="PATH",
        help="the state file to read (default: the config's [state] path, resolved as the "
        "service resolves it)",
    )


def _load_state(args: argparse.Namespace) -> Config:
    """The config for a reader of the state store; a state file must exist: say where we looked.

    ``--state PATH`` reads that SQLite file even when the config names a shared database.
    """
    config = _load(args, resolve_secrets=False)
    if args.state:
        return dataclasses.replace(config, state_path=Path(args.state), shared_state=None)
    if config.shared_state is not None:
        return _with_state_password(config)
    if not config.state_path.exists():
        _, why = state_base(config.file)
        raise StoreError(
            f"no state file at {config.state_path} (a relative [state] path in {config.file} "
            f"resolves in {why}); has the daemon run with this config? --state PATH reads "
            "another file"
        )
    return config


def _with_state_password(config: Config) -> Config:
    """``config`` with the shared database's password read, and no other secret.

    An operator reading the state needs the database, not the Blink API key.
    """
    shared = config.shared_state
    if shared is None or shared.password_source is None:
        return config
    try:
        data = tomllib.loads(Path(config.file).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(config.file, None, f"cannot read it again: {exc}") from None
    t = Table(config.file, "state", data.get("state") or {})
    password, _ = read_secret(t, Path(config.file).resolve().parent, True, None, prefix="password")
    return dataclasses.replace(config, shared_state=dataclasses.replace(shared, password=password))


def _load(args: argparse.Namespace, *, resolve_secrets: bool = True) -> Config:
    path = getattr(args, "config", None) or default_config_path()
    return load_config(path, resolve_secrets=resolve_secrets)


def _fail(message: str) -> None:
    print(f"blink-watcher: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``blink-watcher`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on usage errors
    try:
        return _dispatch(args)
    except ConfigError as exc:
        _fail(f"configuration error: {exc}")
        return EX_CONFIG
    except StoreError as exc:
        _fail(str(exc))
        return EX_FAILURE
    except KeyboardInterrupt:
        return EX_INTERRUPTED


def _dispatch(args: argparse.Namespace) -> int:
    command = args.command
    if command == "check-config":
        config = _load(args)
        sys.stdout.write(effective_config_toml(config))
        if config.shared_state is not None:
            print(f"# state database: {config.shared_state.url}", file=sys.stderr)
        else:
            print(
                f"# state file: {config.state_path} (a relative [state] path resolves in "
                f"{state_base(config.file)[1]})",
                file=sys.stderr,
            )
        for warning in config.warnings:
            print(f"# warning: {warning}", file=sys.stderr)
        print(f"# OK: {config.file}", file=sys.stderr)
        return EX_OK
    if command == "run":
        return _run(_load(args), exit_when_done=args.exit_when_done)
    if command == "status":
        from watcher.cli.status import status

        return status(_load_state(args), as_json=args.json)
    if command == "deliveries":
        from watcher.cli.deliveries import deliveries

        return deliveries(_load_state(args), retry_dead=args.retry_dead, as_json=args.json)
    if command == "watch":
        from watcher.cli.watch import watch

        return watch(args)
    if command in ("add", "remove"):
        return _hand_over(args)
    if command == "demo":
        from watcher.cli.demo import demo

        return demo(keep=args.keep)
    raise AssertionError(command)  # pragma: no cover


def _hand_over(args: argparse.Namespace) -> int:
    """``add`` / ``remove``: IDs checked as the config checks them, then the daemon's API."""
    from watcher.cli import client

    config = _load(args, resolve_secrets=False)
    keys = []
    for raw in args.ids:
        try:
            keys.append(split_execution(raw, config.blink.workspace_id))
        except ValueError as exc:
            _fail(str(exc))
            return EX_USAGE
    if args.command == "add":
        return client.add(config, keys, wait=args.wait, as_json=args.json)
    return client.remove(config, keys, as_json=args.json)


def _run(config: Config, *, exit_when_done: bool) -> int:
    from watcher import eventloop
    from watcher import logs as wlogging
    from watcher.service import Service
    from watcher.systemd import Notifier

    wlogging.configure(config.log_level, config.log_format, journal=config.log_journal)
    service = Service(config, exit_when_done=exit_when_done, notifier=Notifier.from_env())
    # The service owns the configuration now: a replica drops the parsed execution
    # list once the shared database holds it, and this frame must not keep it alive.
    del config
    return eventloop.run(service.run())
