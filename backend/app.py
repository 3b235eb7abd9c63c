"""The application factory: settings → pool → routes, errors, auth and observability."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

import asyncpg
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from backend import __version__, api_docs, clock, crypto, deps, i18n, idempotency, maintenance, metrics, migrate, ops
from backend.api_docs import openapi as api_openapi
from backend.audit.denied import provide_autocommit, provide_tx
from backend.auth.middleware import PUBLIC_PATHS, BearerAuthMiddleware
from backend.auth.passwords import Passwords
from backend.auth.routes import AuthController
from backend.auth.service import AuthContext
from backend.auth.tokens import SigningKey, load_signing_key
from backend.bodies import read_body
from backend.config import Settings, parse_dsns
from backend.db import create_pool
from backend.errors import exception_handlers
from backend.guards import provide_actor
from backend.i18n.middleware import negotiated
from backend.jobs.worker import Handler
from backend.logs import configure_logging
from backend.replicas import (
    Replicas,
    commit_header,
    provide_autocommit_reads,
    provide_fresh_reads,
    provide_reads,
    read_again_on_primary,
)
from backend.timeouts import request_timeout

log = logging.getLogger("canbao.app")


def route_handlers() -> list[object]:
    from backend.admin.routes import DeviceController, PartnerController, UserController
    from backend.audit.routes import AuditController
    from backend.divisions.routes import DivisionController
    from backend.eligibility.routes import (
        ClaimController,
        EligibilityController,
        EligibilityReportController,
        ListController,
    )
    from backend.enrollment.routes import (
        EnrollmentController,
        ExclusionReviewController,
        HouseholdController,
        MoveController,
        RenewalController,
        ReportController,
    )
    from backend.fhir.routes import FhirController, PartnerTokenController
    from backend.jobs.routes import JobController
    from backend.policy.routes import PolicyController
    from backend.premiums.routes import (
        AdjustmentController,
        CollectionReportController,
        CollectorDayController,
        PaymentController,
        ReceiptBlockController,
        ReceiptCheckController,
        ReconciliationController,
    )
    from backend.residents.routes import ResidentController
    from backend.sync.conflicts.routes import ConflictController
    from backend.sync.routes import SyncController
    from backend.web import route_handlers as web_handlers

    return [
        *web_handlers(),
        ops.health,
        ops.ready,
        AuthController,
        DivisionController,
        UserController,
        DeviceController,
        PartnerController,
        AuditController,
        JobController,
        PolicyController,
        HouseholdController,
        MoveController,
        EnrollmentController,
        RenewalController,
        ReportController,
        ReceiptBlockController,
        PaymentController,
        AdjustmentController,
        CollectorDayController,
        CollectionReportController,
        ReconciliationController,
        ReceiptCheckController,
        ListController,
        EligibilityController,
        ClaimController,
        ExclusionReviewController,
        EligibilityReportController,
        SyncController,
        ConflictController,
        ResidentController,
        PartnerTokenController,
        FhirController,
    ]


def housekeeping_chores() -> dict[str, maintenance.Chore]:
    """Each package's housekeeping, run on the maintenance timer by one worker at a time."""
    from backend.auth.service import expire_login_windows
    from backend.enrollment.coverage_report import compact as compact_coverage
    from backend.jobs.service import expire as expire_jobs
    from backend.residents.service import expire_login_limits
    from backend.sync.pull import housekeeping as prune_sync_changes

    return {
        "sync_floor": prune_sync_changes,
        "idempotency_keys": idempotency.expire,
        "login_failures": expire_login_windows,
        "resident_login_limits": expire_login_limits,
        "jobs": expire_jobs,
        "coverage_tallies": compact_coverage,
    }


def job_handlers() -> dict[str, Handler]:
    """What each kind of background job runs (`canbao worker`), by kind."""
    from backend.eligibility import lists
    from backend.eligibility import reports as eligibility_reports
    from backend.enrollment import coverage_report, history, roster
    from backend.premiums import reports

    return {
        lists.LIST_IMPORT: lists.run_import_job,
        history.HISTORY_IMPORT: history.run_import_job,
        reports.RECONCILIATION: reports.run_reconciliation_job,
        eligibility_reports.UNENROLLED_EXPORT: eligibility_reports.run_unenrolled_export,
        coverage_report.COVERAGE_EXPORT: coverage_report.run_coverage_export,
        roster.ROSTER_EXPORT: roster.run_roster_export,
    }


# The collector of a served worker: its youngest generation is collected after 10,000 new
# containers instead of CPython's 700. A push decodes and answers tens of thousands of objects that
# live until its answer, and at 700 each was walked again and again on its way to the oldest
# generation: `bench/sync_concurrent_push.py` spent 0.27 s of the server's CPU in 971 collections
# (six full ones of 11 ms each), 0.085 s in 36 at 10,000 (none full); `prefecture.py --quick`
# 0.35 → 0.21 s, its fifteen 9 ms full collections down to one (timed with `gc.callbacks`). Garbage
# in cycles waits for at most 10,000 allocations; a collection of the young takes 1–2 ms.
GC_THRESHOLDS = (10_000, 10, 10)


def serve_app(settings: Settings | None = None, *, configure_logs: bool = True) -> Litestar:
    """The app of a `canbao serve` worker: `create_app`, and at the end of its start-up what exists
    then is frozen out of the garbage collector's generations (`gc.freeze`) and the collector set to
    `GC_THRESHOLDS`. Not for tests: what a test process holds then would never be collected."""
    return create_app(settings, configure_logs=configure_logs, freeze_gc=True)


def configure_process(settings: Settings) -> tuple[SigningKey, crypto.Keyring]:
    """What an app sets for its whole process: the business clock, the default language, the keys.
    `create_app` does it; so does a process that serves an app built earlier for the same settings
    (the test suite builds one app per settings, not one per test: ~0.3 s of Litestar's routing)."""
    # `canbao serve --workers N` starts each worker here, from the environment.
    clock.pin_from_settings(settings.business_clock)
    deps.resolve_in_turn()
    i18n.set_default_language(settings.language)
    key = load_signing_key(settings)
    keyring = crypto.load_keyring(settings)
    crypto.install(keyring)
    return key, keyring


def create_app(settings: Settings | None = None, *, configure_logs: bool = True, freeze_gc: bool = False) -> Litestar:
    settings = settings or Settings.from_env()
    if settings.database_url is None:
        raise RuntimeError("create_app needs DATABASE_URL; `canbao serve` starts the embedded database")
    if configure_logs:
        configure_logging(settings.log_level)
    key, keyring = configure_process(settings)
    passwords = Passwords(settings.argon2_time_cost, settings.argon2_memory_kib)
    dsn = settings.database_url
    from backend.web import template_config as web_template_config

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncGenerator[None, None]:
        pool = await create_pool(dsn, settings.pool_min_size, settings.pool_max_size)
        try:
            async with pool.acquire() as conn:
                # Refuses a database sealed under other keys (the message names the key).
                await crypto.check_database(conn, keyring)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # A database that is down at start: requests answer 503 until it is back; the job
            # workers and every command check the keys when they connect.
            log.warning("keys not checked: the database does not answer", extra={"error": type(exc).__name__})
        app.state.pool = pool
        # Replica pools open their connections when first used: a standby down at start is read around.
        app.state.replicas = Replicas(
            [
                await create_pool(
                    r, 0, settings.pool_max_size, statement_timeout_s=settings.replica_statement_timeout_s
                )
                for r in parse_dsns(settings.replica_dsns)
            ]
        )
        app.state.auth = AuthContext(pool=pool, settings=settings, key=key, passwords=passwords)
        housekeeping = (
            asyncio.create_task(maintenance.loop(pool, settings, housekeeping_chores()))
            if settings.maintenance_interval_s > 0
            else None
        )
        gauges = asyncio.create_task(metrics.sample_pool(pool))
        if freeze_gc:
            # What lives as long as the server (modules, routes, templates, translations) leaves the
            # collector's generations: a full collection no longer walks it, and a large push (tens
            # of thousands of live objects) triggers several (sync_push.py: server CPU 0.87 → 0.82 s).
            gc.freeze()
            gc.set_threshold(*GC_THRESHOLDS)
        try:
            yield
        finally:
            for task in (housekeeping, gauges):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await pool.close()
            await app.state.replicas.close()

    app = Litestar(
        route_handlers=route_handlers(),  # type: ignore[arg-type]
        lifespan=[lifespan],
        dependencies={
            "tx": Provide(provide_tx),
            "autocommit": Provide(provide_autocommit),
            "reads": Provide(provide_reads),
            "autocommit_reads": Provide(provide_autocommit_reads),
            "fresh_reads": Provide(provide_fresh_reads),
            "actor": Provide(provide_actor, sync_to_thread=False),
        },
        exception_handlers=exception_handlers,
        template_config=web_template_config(),
        before_request=read_body,  # strict JSON and the route's media type, before Litestar binds `data`
        middleware=[
            request_timeout(settings.request_timeout_s),
            DefineMiddleware(BearerAuthMiddleware, exclude=PUBLIC_PATHS),
            read_again_on_primary,  # innermost: a read that failed on a standby runs again on the primary
        ],
        state=_initial_state(settings, key, passwords),
        openapi_config=OpenAPIConfig(
            title="参保 Canbao API",
            version=__version__,
            description=(
                "城乡居民基本医疗保险参保：户籍登记、参保、缴费、资助名单、平板同步、居民查询，"
                "以及医院的参保核验（FHIR，在 /fhir 下）。\n\n"
                "除登录、健康检查等公开接口外都要令牌：工作人员用 POST /api/v1/auth/login、"
                "居民用 POST /api/v1/resident/login、医院用 POST /fhir/token 取得 access_token，"
                "再点 Authorize 填入。"
                "错误按 RFC 9457 以 application/problem+json 返回，code 字段稳定。"
            ),
            path=api_docs.DOCS_PATH,
            render_plugins=api_docs.render_plugins(),
            components=Components(
                security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")}
            ),
            security=[{"bearer": []}],
        ),
        logging_config=None,  # ours: JSON lines, set up in configure_logging
        debug=False,
    )
    api_openapi.document(app)  # every operation's error answers, derived from what it runs
    # Outside the exception handlers and the router, so 401s, 404s of unknown paths and 500s are
    # observed and carry the request id like every other answer.
    app.asgi_handler = negotiated(ops.observe(commit_header(app.asgi_handler)))
    return app


def _initial_state(settings: Settings, key: SigningKey, passwords: Passwords) -> State:
    return State({"settings": settings, "key": key, "passwords": passwords, "head_revision": migrate.head_revision()})
