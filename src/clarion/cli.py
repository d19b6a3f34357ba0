"""The ``clarion`` command: serve, migrate, version, and operator commands."""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from alembic.util import CommandError
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from clarion import __version__, runloop
from clarion.config import Settings, load_settings
from clarion.core.secretbox import SecretKeyError
from clarion.errors import ClarionError, Refused
from clarion.heap import settle
from clarion.logs import configure_logging
from clarion.store.db import (
    Database,
    SchemaOutOfDate,
    head_revision,
    known_revision,
    revisions_up_to,
)
from clarion.store.urls import database_address

if TYPE_CHECKING:
    from clarion.core.services import Services

# The services (providers, API models, metrics), the HTTP servers and campaigns are imported
# by the commands that use them: `migrate`, `version` and `--help` start in about half the
# time without them.

T = TypeVar("T")
log = logging.getLogger("clarion.cli")

cli = typer.Typer(
    help="clarion: a self-hosted push-notification server (PowerAuth and WalletConnect APIs).",
    no_args_is_help=True,
    add_completion=False,
)
app_cli = typer.Typer(help="Manage applications (PowerAuth appId).", no_args_is_help=True)
cli.add_typer(app_cli, name="app")
campaign_cli = typer.Typer(help="Send PowerAuth campaigns and follow them.", no_args_is_help=True)
cli.add_typer(campaign_cli, name="campaign")

err = Console(stderr=True, soft_wrap=True)  # an error is one line, however narrow the terminal
out = Console()

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML file with settings (keys as in docs/configuration.md, lower case). "
        "CLARION_* environment variables win over it.",
        exists=True,
        dir_okay=False,
    ),
]


def _settings(config: Path | None, **overrides: object) -> Settings:
    if config is None and os.environ.get("CLARION_CONFIG_FILE"):
        # Read as --config is (it was ignored: the command ran on the SQLite default).
        config = Path(os.environ["CLARION_CONFIG_FILE"])
    try:
        return load_settings(config, **{k: v for k, v in overrides.items() if v is not None})
    except FileNotFoundError as exc:
        err.print(f"[red]invalid settings:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    except ValidationError as exc:
        for error in exc.errors():
            message = str(error["msg"]).removeprefix("Value error, ")
            name = ".".join(str(part) for part in error["loc"])
            where = f" {name} (CLARION_{name.upper()})" if name else "s"
            err.print(f"[red]invalid setting{where}:[/red] {message}", highlight=False)
        raise typer.Exit(2) from None
    except ValueError as exc:
        err.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from None


def _run(coro: Awaitable[T], settings: Settings) -> T:
    """Run a coroutine, turning clarion's expected failures into a message and exit code 1."""
    try:
        return runloop.run(coro)  # type: ignore[arg-type]
    except (SchemaOutOfDate, SecretKeyError, ClarionError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    except OSError as exc:
        where = database_address(settings.database_url)
        err.print(f"[red]cannot reach the database at {where}:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    except (ArgumentError, NoSuchModuleError, ModuleNotFoundError) as exc:
        err.print(f"[red]unusable database URL:[/red] {exc}")
        raise typer.Exit(2) from None
    except DBAPIError as exc:  # the server answered: no such database or role, no access
        err.print(f"[red]the database refused:[/red] {_first_line(exc.orig or exc)}")
        raise typer.Exit(1) from None
    except CommandError as exc:  # alembic: an unknown revision
        err.print(f"[red]migration:[/red] {exc}")
        raise typer.Exit(1) from None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: may be any address


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


async def _with_services(settings: Settings, action: Callable[[Services], Awaitable[T]]) -> T:
    from clarion.core.services import open_services

    services = await open_services(settings)
    try:
        return await action(services)
    finally:
        await services.close()


async def _prepare(settings: Settings) -> None:
    """Migrate (SQLite) or check the schema (PostgreSQL) before the server starts."""
    from clarion.core.services import open_services

    services = await open_services(settings)
    await services.close()


def _listen(host: str, port: int) -> socket.socket:
    """The server's listening socket, bound before anything starts: a port in use or an
    unknown host is one line and exit 1, not a worker started and "ready" logged first."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as exc:
        err.print(f"[red]cannot listen on {host}:{port}:[/red] {_os_reason(exc)}")
        raise typer.Exit(1) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        err.print(f"[red]cannot listen on {host}:{port}:[/red] {_os_reason(exc)}")
        raise typer.Exit(1) from None
    sock.set_inheritable(True)
    return sock


def _os_reason(exc: BaseException) -> str:
    return str(getattr(exc, "strerror", None) or exc)


class HttpServer(enum.StrEnum):
    UVICORN = "uvicorn"
    GRANIAN = "granian"


def _serve_granian(settings: Settings, processes: int) -> None:
    """Granian's supervisor with ``processes`` workers, each building the app from the
    environment. It handles SIGTERM / SIGINT (workers finish their requests and run the
    application's shutdown, which stops the job worker) and logs nothing of its own below
    warnings; clarion's own logging is configured in each worker."""
    from granian import Granian
    from granian.constants import Interfaces, Loops
    from granian.log import LogLevels

    Granian(
        "clarion.app:app_from_environment",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=processes,
        loop=Loops.uvloop,
        log_level=LogLevels.warning,
        log_access=False,
    ).serve()


@cli.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on [127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [8080].")] = None,
    worker: Annotated[
        bool,
        typer.Option(
            "--worker/--no-worker", help="Also run a job worker (--no-worker: the API only)."
        ),
    ] = True,
    processes: Annotated[
        int, typer.Option(min=1, help="API processes sharing the port (each with a worker).")
    ] = 1,
    server: Annotated[
        HttpServer,
        typer.Option(
            help="uvicorn: one process (with --processes 1), the default. granian: Rust HTTP "
            "layer, about a third less CPU per request; a supervisor process runs the workers."
        ),
    ] = HttpServer.UVICORN,
) -> None:
    """Run the HTTP API (and a job worker). Applies migrations first on the embedded SQLite
    default; on PostgreSQL it refuses to start until `clarion migrate` has brought the schema up
    to date. SIGTERM is graceful."""
    from clarion import serving
    from clarion.app import create_app

    settings = _settings(config, host=host, port=port, run_worker=None if worker else False)
    configure_logging(settings.log_level, json_lines=settings.log_json)
    sock = _listen(settings.host, settings.port)
    if not _loopback(settings.host) and not (settings.admin_token or settings.admin_username):
        log.warning(
            "the admin API (/admin/*) has no authentication and listens on %s: anyone who "
            "reaches it can replace push credentials; set CLARION_ADMIN_TOKEN",
            settings.host,
        )
    _run(_prepare(settings), settings)
    address, family = sock.getsockname(), sock.family
    if processes > 1 or server is HttpServer.GRANIAN:
        sock.close()  # they bind their own: this one only said the address can be had
        # Each process builds its own app from the environment (and the same config file).
        if config is not None:
            os.environ["CLARION_CONFIG_FILE"] = str(config.resolve())
        if not worker:
            os.environ["CLARION_RUN_WORKER"] = "false"
    if server is HttpServer.GRANIAN:
        _serve_granian(settings, processes)
        return
    if processes > 1 and serving.can_share_port():
        try:
            sockets = serving.shared_sockets(address, family, processes)
        except OSError as exc:
            err.print(f"[red]cannot listen on {settings.host}:{settings.port}:[/red] {exc}")
            raise typer.Exit(1) from None
        supervisor = serving.Supervisor(sockets, stop_seconds=settings.worker_grace + 20)
        raise typer.Exit(supervisor.run())
    if processes > 1:
        import uvicorn

        uvicorn.run(
            "clarion.app:app_from_environment",
            factory=True,
            workers=processes,
            host=settings.host,
            port=settings.port,
            log_config=None,
            server_header=False,
            proxy_headers=False,
        )
        return
    server_config = serving.uvicorn_config(create_app(settings, server_process=True))
    runloop.run(serving.GracefulServer(server_config).serve(sockets=[sock]))


@cli.command("worker")
def worker_command(
    config: ConfigOption = None,
    concurrency: Annotated[
        int | None, typer.Option(help="Jobs run at once [CLARION_WORKER_CONCURRENCY, 4].")
    ] = None,
    grace: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Seconds the jobs in hand get to reach a safe point on SIGTERM before they "
            "are cancelled [CLARION_WORKER_GRACE, 10].",
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Serve this worker's /metrics (Prometheus) on this port "
            "[CLARION_WORKER_METRICS_PORT, none].",
        ),
    ] = None,
) -> None:
    """Run a job worker alone. Start any number, on any number of machines sharing one
    PostgreSQL. SIGTERM or Ctrl-C: stop claiming, hand the jobs in hand back at their next
    safe point, exit."""
    settings = _settings(
        config,
        worker_concurrency=concurrency,
        worker_metrics_port=metrics_port,
        worker_grace=grace,
    )
    configure_logging(settings.log_level, json_lines=settings.log_json)
    if settings.worker_metrics_port is not None:
        # Its pushes are counted here, not in any serve process: scrape each worker.
        from prometheus_client import start_http_server

        try:
            metrics_server, _ = start_http_server(settings.worker_metrics_port, addr=settings.host)
        except OSError as exc:
            err.print(
                f"[red]cannot serve metrics on port {settings.worker_metrics_port}:[/red] {exc}"
            )
            raise typer.Exit(1) from None
        # The port it took: with --metrics-port 0 the system chose it.
        log.info(
            "worker metrics on http://%s:%d/metrics",
            settings.host,
            metrics_server.server_port,
            extra={"metrics_port": metrics_server.server_port},
        )

    async def run() -> None:
        from clarion.core.services import open_services

        services = await open_services(settings)
        worker = services.worker()
        loop = asyncio.get_running_loop()

        def on_signal(sig: signal.Signals) -> None:
            if not worker.stopping:
                log.info(
                    "%s: stopping; the %d jobs in hand go back to the queue at their next safe "
                    "point (at most %.0f s); %s again to stop now",
                    sig.name,
                    len(worker.in_flight),
                    settings.worker_grace,
                    sig.name,
                )
                worker.stop()
            else:
                log.info("%s again: stopping now", sig.name)
                worker.stop(now=True)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        settle()
        log.info(
            "worker started",
            extra={"concurrency": settings.worker_concurrency, "loop": runloop.loop_name()},
        )
        try:
            await worker.run(grace=settings.worker_grace)
        finally:
            await services.close()
        log.info("worker stopped", extra={"jobs_completed": worker.completed})

    _run(run(), settings)


@cli.command()
def send(
    app: Annotated[str, typer.Option("--app", help="Application id.")],
    user: Annotated[str, typer.Option("--user", help="User id.")],
    title: Annotated[str | None, typer.Option(help="Notification title.")] = None,
    body: Annotated[str | None, typer.Option(help="Notification body.")] = None,
    activation: Annotated[
        str | None, typer.Option(help="Only this activation of the user.")
    ] = None,
    silent: Annotated[bool, typer.Option(help="A background (data-only) push.")] = False,
    queue: Annotated[
        bool, typer.Option("--async", help="Enqueue for the workers instead of sending now.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Send a push to a user's devices now and print the outcome per platform."""
    from pydantic import ValidationError

    from clarion.api.powerauth.envelope import validation_message
    from clarion.api.powerauth.message_models import Message
    from clarion.api.powerauth.messages import to_spec
    from clarion.core.messages import Mode

    if title is None and body is None and not silent:
        err.print("[red]error:[/red] give --title or --body (or --silent for a background push)")
        raise typer.Exit(1)
    settings = _settings(config)
    # Checked as the API checks a message: the same limits, the same sentences.
    message = {"userId": user, "body": {"title": title, "body": body}}
    if activation is not None:
        message["activationId"] = activation
    if silent:
        message["attributes"] = {"silent": True}
    try:
        spec = to_spec(Message.model_validate(message))
    except ValidationError as exc:
        err.print(f"[red]error:[/red] {validation_message(exc.errors())}")
        raise typer.Exit(1) from None
    mode = Mode.ASYNCHRONOUS if queue else Mode.SYNCHRONOUS
    result = _run(_with_services(settings, lambda s: s.messages.send(app, [spec], mode)), settings)
    if result is None:
        out.print("queued: a worker will deliver it")
        return
    table = Table("platform", "sent", "pending", "failed", "total")
    for platform, counts in result.by_platform.items():
        row = (counts.sent, counts.pending, counts.failed, counts.total)
        table.add_row(platform.seed_name, *(str(n) for n in row))
    out.print(table)


@cli.command()
def emulate(
    folder: Annotated[
        Path, typer.Option(help="Where the generated credentials and settings are written.")
    ] = Path("clarion-emulator"),
    host: Annotated[str, typer.Option(help="Address the emulators listen on.")] = "127.0.0.1",
    apns_port: Annotated[int, typer.Option(help="APNs emulator port (0: any free one).")] = 8443,
    fcm_port: Annotated[int, typer.Option(help="FCM emulator port.")] = 8444,
    hms_port: Annotated[int, typer.Option(help="HMS emulator port.")] = 8445,
    bundle: Annotated[str, typer.Option(help="iOS bundle id the APNs emulator accepts.")] = (
        "com.example.app"
    ),
    app_id: Annotated[
        str, typer.Option("--app", help="Application id in the printed commands.")
    ] = ("mobile-app"),
    api: Annotated[str, typer.Option(help="clarion's URL in the printed commands.")] = (
        "http://127.0.0.1:8080"
    ),
) -> None:
    """Run APNs, FCM and HMS emulators on loopback and print how to point clarion at them, so
    pushes can be seen arriving without an Apple, Google or Huawei account."""
    from clarion.emulators.runner import Emulation, run

    def ready(emulation: Emulation) -> None:
        out.print("[bold]Emulators running.[/bold] Start clarion with these settings:\n")
        for name, value in emulation.settings.items():
            out.print(f"export {name}={value}", soft_wrap=True)
        out.print(f"\n(also in {folder / 'clarion-emulated.env'})")
        out.print(
            "\nThen upload the emulated credentials (also in "
            f"{folder / 'upload-credentials.sh'}):\n"
        )
        for command in emulation.commands:
            out.print(command, soft_wrap=True, highlight=False, markup=False)
        out.print(
            "\nFor WalletConnect, a tenant with the same credentials (also in "
            f"{folder / 'upload-walletconnect-credentials.sh'}):\n"
        )
        for command in emulation.wc_commands:
            out.print(command, soft_wrap=True, highlight=False, markup=False)
        out.print("\nPushes appear below as they arrive. Ctrl-C stops.\n")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(
            folder,
            host=host,
            ports=(apns_port, fcm_port, hms_port),
            bundle=bundle,
            api=api,
            app_id=app_id,
            show=lambda line: out.print(line, soft_wrap=True, highlight=False, markup=False),
            ready=ready,
            stop=stop,
        )

    try:
        runloop.run(main())
    except OSError as exc:  # not the database: an emulator's port (in use, not allowed)
        err.print(f"[red]cannot start the emulators:[/red] {exc} (choose other ports with ")
        err.print("--apns-port, --fcm-port and --hms-port; 0 takes any free one)")
        raise typer.Exit(1) from None


@cli.command()
def migrate(
    config: ConfigOption = None,
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Apply database migrations (up to the latest revision by default)."""
    settings = _settings(config)

    async def run() -> tuple[str | None, str | None]:
        db = Database.for_settings(settings)
        try:
            before = await db.current_revision()
            if revision != "head" and before is not None and known_revision(revision):
                target = revision
                if before != target and target in revisions_up_to(before):
                    raise SchemaOutOfDate(
                        f"the database is at revision {before}, after {target}: clarion "
                        "migrates forward only"
                    )
            found = await db.upgrade(revision)  # another migrate may have run meanwhile
            return found, await db.current_revision()
        finally:
            await db.dispose()

    before, after = _run(run(), settings)
    where = make_url(settings.database_url).render_as_string(hide_password=True)
    out.print(
        f"database migrated: {before or 'empty'} -> {after} (head {head_revision()}): {where}",
        highlight=False,
        soft_wrap=True,
    )


@cli.command()
def prune(
    config: ConfigOption = None,
    days: Annotated[
        float | None,
        typer.Option(min=0, help="Messages and jobs older than this (default: retention_days)."),
    ] = None,
    wc_days: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="WalletConnect message ids older than this (default: "
            "wc_message_retention_days; 0 keeps them).",
        ),
    ] = None,
) -> None:
    """Delete finished jobs, delivered messages (with their ledger rows) and, if set,
    WalletConnect message ids older than their retention, now (workers also do it about once
    an hour)."""
    settings = _settings(config)
    keep = settings.retention_days if days is None else days
    keep_wc = settings.wc_message_retention_days if wc_days is None else wc_days
    if keep <= 0 and keep_wc <= 0:
        out.print("retention is 0 days (keep forever): nothing deleted")
        return
    from clarion.core.retention import Retention

    pruned = _run(
        _with_services(settings, lambda s: Retention(s.db, keep, keep_wc).prune()), settings
    )
    said = [
        f"{pruned.jobs:,} finished jobs and {pruned.messages:,} delivered messages (with "
        f"their ledger rows) older than {keep:g} days"
        if keep > 0
        else "no messages or jobs (retention_days is 0)",
        f"{pruned.walletconnect_ids:,} WalletConnect message ids older than {keep_wc:g} days"
        if keep_wc > 0
        else "no WalletConnect message ids (wc_message_retention_days is 0)",
    ]
    out.print("deleted " + "; ".join(said), highlight=False)


@cli.command()
def version() -> None:
    """Print clarion's version and the schema revision it needs."""
    out.print(f"clarion {__version__} (schema {head_revision()}, Python {sys.version.split()[0]})")


@app_cli.command("create")
def app_create(
    app_id: Annotated[str, typer.Argument(help="Application id, e.g. mobile-app.")],
    config: ConfigOption = None,
) -> None:
    """Create an application."""
    settings = _settings(config)
    created = _run(_with_services(settings, lambda s: s.apps.create(app_id)), settings)
    out.print(f"application created: {created}")


@app_cli.command("list")
def app_list(config: ConfigOption = None) -> None:
    """List applications and which platforms each has credentials for."""
    settings = _settings(config)
    apps = _run(_with_services(settings, lambda s: s.apps.summaries()), settings)
    table = Table("appId", "ios", "android", "huawei")
    for app in apps:
        table.add_row(
            *(app.app_id, *("yes" if f else "-" for f in (app.ios, app.android, app.huawei)))
        )
    out.print(table)


@campaign_cli.command("send")
def campaign_send(
    campaign_id: Annotated[int, typer.Argument(help="Campaign id.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Show progress until the campaign completes.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Send a campaign live: schedule its fan-out for the workers (refused if it was sent)."""
    settings = _settings(config)

    from clarion.core.campaigns import parse_id

    async def run(services: Services) -> None:
        await services.campaigns.send_live(parse_id(campaign_id))
        out.print(f"campaign {campaign_id} scheduled: the workers deliver it")
        if follow:
            await follow_campaign(services, campaign_id, out)

    _run(_with_services(settings, run), settings)


@campaign_cli.command("follow")
def campaign_follow(
    campaign_id: Annotated[int, typer.Argument(help="Campaign id.")],
    config: ConfigOption = None,
) -> None:
    """Show a sent campaign's progress until it completes."""
    settings = _settings(config)
    _run(_with_services(settings, lambda s: follow_campaign(s, campaign_id, out)), settings)


STALL_SECONDS = 15.0


async def follow_campaign(
    services: Services, campaign_id: int, console: Console, *, stall: float = STALL_SECONDS
) -> None:
    """A progress bar over the campaign's devices, with rate and ETA, until it completes.
    NotFound for an unknown campaign, Refused for one not sent (it would never complete).
    After ``stall`` seconds without progress it says once what may be missing (a worker)."""
    from clarion.core.campaigns import parse_id

    view = await services.campaigns.detail(parse_id(campaign_id))
    if not view.sent:
        raise Refused(
            f"Campaign was not sent: {campaign_id}. Send it with `clarion campaign send "
            f"{campaign_id} --follow`."
        )
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        Task,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} pushes/s" if speed else "- pushes/s")

    columns = (
        TextColumn(f"campaign {campaign_id}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[failed]} failed"),
    )
    with Progress(*columns, console=console, speed_estimate_period=10) as bar:
        task = bar.add_task("send", total=None, failed=0)
        seen: tuple[int, int, bool] | None = None
        moved = time.monotonic()
        warned = False
        while True:
            state = await services.campaigns.progress(campaign_id)
            bar.update(
                task,
                total=state.total if state.planned or state.total else None,
                completed=state.sent + state.failed,
                failed=state.failed,
            )
            if state.completed_at is not None:
                break
            now = (state.sent + state.failed, state.total, state.planned)
            if now != seen:
                seen, moved, warned = now, time.monotonic(), False
            elif not warned and time.monotonic() - moved >= stall:
                warned = True
                bar.console.print(
                    f"no progress for {stall:.0f} s: the campaign is delivered by job workers "
                    "(`clarion serve` without --no-worker, or `clarion worker`) on this "
                    "database; is one running?"
                )
            await asyncio.sleep(0.5)
    console.print(
        f"campaign {campaign_id} completed: {state.sent} sent, {state.failed} failed "
        f"of {state.total} devices"
    )


def main() -> None:
    """The ``clarion`` command. Once a command has finished (its services closed, its output
    written), the process ends without the interpreter's teardown: that teardown races the
    HTTP client's native runtime threads, and CPython 3.11 then aborts now and then with
    "PyGILState_Release: thread state must be current when releasing" (seen here both with
    pyreqwest's single-threaded runtime and with the multi-threaded one), which turned a
    clean stop into exit status 134."""
    try:
        cli()
        code = 0
    except SystemExit as exc:
        code = _exit_status(exc.code)
    _end_process(code)


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # as the interpreter does with sys.exit("message")
    return 1


def _end_process(code: int) -> None:
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can reach it
            pass
    os._exit(code)
