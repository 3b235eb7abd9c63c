"""Settings: one frozen Struct read once from `CANBAO_*` variables and `DATABASE_URL`.

A bad value stops start-up with the name of the variable that holds it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from backend.embedded import memory_settings
from backend.i18n import parse_language

PREFIX = "CANBAO_"

PositiveInt = Annotated[int, msgspec.Meta(gt=0)]


def parse_dsns(value: str) -> list[str]:
    """`CANBAO_REPLICA_DSNS`: DSNs separated by commas (a comma inside one, as in `host=a,b`, stays)."""
    return [part.strip() for part in re.split(r",\s*(?=postgres(?:ql)?://)", value) if part.strip()]


class SettingsError(Exception):
    """A configuration variable has a bad value."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    database_url: str | None = None  # DATABASE_URL; None → embedded PostgreSQL in data_dir
    # With DATABASE_URL (the application role): the role that owns the tables, for `canbao migrate`.
    owner_database_url: str | None = None
    data_dir: str = ".canbao"  # CANBAO_DATA_DIR
    # The embedded PostgreSQL's memory, over its sizing to the machine: "work_mem=256MB,shared_buffers=2GB"
    pg_settings: str = ""  # CANBAO_PG_SETTINGS
    # The embedded PostgreSQL's scheduling policy: batch (not favoured on wake-up) or normal.
    pg_cpu_policy: Literal["batch", "normal"] = "batch"  # CANBAO_PG_CPU_POLICY
    jwt_secret: str | None = None  # CANBAO_JWT_SECRET; None → a key kept in data_dir
    # Keys sealing identity and phone numbers (backend/crypto.py): a JSON key file, never in the
    # database; None → keys.json made in data_dir (embedded mode only).
    key_file: str | None = None  # CANBAO_KEY_FILE
    crypto_suite: Literal["aes", "sm"] = "aes"  # sm: SM4-GCM and HMAC-SM3 (GB/T 39786 evaluations)
    access_token_ttl_s: Annotated[int, msgspec.Meta(ge=30, le=86_400)] = 900
    refresh_token_ttl_s: Annotated[int, msgspec.Meta(ge=60)] = 30 * 86_400
    refresh_grace_s: Annotated[int, msgspec.Meta(ge=0, le=300)] = 30
    login_max_failures_per_user: PositiveInt = 5
    login_max_failures_per_address: PositiveInt = 20
    login_failure_window_s: PositiveInt = 900
    # Residents (query-code login) and partners (hospital systems, client credentials).
    resident_token_ttl_s: Annotated[int, msgspec.Meta(ge=30, le=3_600)] = 600
    resident_max_failures_per_id: PositiveInt = 5
    resident_max_failures_per_address: PositiveInt = 30
    resident_failure_window_s: PositiveInt = 900
    resident_lockout_s: PositiveInt = 900  # doubled at each further lockout, up to a day
    partner_token_ttl_s: Annotated[int, msgspec.Meta(ge=30, le=3_600)] = 300
    timezone: str = "Asia/Shanghai"  # the pooling area's local time: business dates
    # Tests, demos and training only: business dates (backend/clock.py) start at this instant, e.g.
    # 2026-12-02T02:00:00Z, and run on from there; None: the system clock. Never in production.
    business_clock: datetime | None = None  # CANBAO_BUSINESS_CLOCK
    # The language of people-facing text when a request's Accept-Language names none Canbao speaks
    # (backend/i18n): zh-CN, or en for developers. Codes, field names and amounts never change.
    language: str = "zh-CN"
    # Standbys that FHIR eligibility checks and Coverage searches may read (backend/replicas.py):
    # DSNs separated by commas; "" reads everything on the primary.
    replica_dsns: str = ""  # CANBAO_REPLICA_DSNS
    # A statement on a standby that runs longer than this is cancelled and its request read again on
    # the primary (a standby overloaded, or hung: backend/replicas.py); below request_timeout_s.
    replica_statement_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3_600)] = 5.0
    pool_min_size: Annotated[int, msgspec.Meta(ge=0)] = 1
    pool_max_size: PositiveInt = 10
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Prometheus `/metrics` is served by `canbao serve` on this address alone, never on the API's port.
    metrics_host: str = "127.0.0.1"
    metrics_port: Annotated[int, msgspec.Meta(ge=0, le=65_535)] = 9464  # 0: no metrics listener
    # Proxies whose X-Forwarded-For is trusted (comma-separated addresses, or *); None: no proxy.
    forwarded_allow_ips: str | None = None
    # Argon2id cost. The defaults are RFC 9106's second recommendation; tests may lower them.
    argon2_time_cost: PositiveInt = 3
    argon2_memory_kib: Annotated[int, msgspec.Meta(ge=8)] = 65_536
    # Housekeeping (backend/maintenance.py): every interval, one worker prunes and expires.
    maintenance_interval_s: Annotated[int, msgspec.Meta(ge=0)] = 3_600  # 0: off
    # The audit chain's sealer (backend/audit/chain.py), run by the job workers: seconds between rounds.
    audit_seal_interval_s: Annotated[float, msgspec.Meta(ge=0, le=3_600)] = 5.0  # 0: off
    sync_retention_days: PositiveInt = 90  # older pull cursors get a fresh snapshot
    idempotency_retention_days: PositiveInt = 30
    # A request that has not begun its answer after this long is stopped (503 request_timeout);
    # list uploads have their own, longer limit (backend/eligibility/routes.py).
    request_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3_600)] = 60.0
    # Background jobs (backend/jobs/): uploads bigger than sync_upload_max_bytes become jobs.
    job_workers: Annotated[int, msgspec.Meta(ge=0, le=32)] = 1  # worker processes `canbao serve` starts
    # Worker processes run at this nice value: on a small machine the API's answers come first.
    job_worker_nice: Annotated[int, msgspec.Meta(ge=0, le=19)] = 10
    job_lease_s: Annotated[int, msgspec.Meta(ge=2, le=3_600)] = 30  # a silent worker's job is retaken after this
    job_heartbeat_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1.0  # lease renewal and progress
    job_poll_s: Annotated[float, msgspec.Meta(gt=0, le=300)] = 5.0  # how often an idle worker looks
    job_retention_days: PositiveInt = 30
    job_retry_after_s: PositiveInt = 30  # Retry-After when the job limits below are reached
    max_jobs_per_user: PositiveInt = 2  # uploads and jobs queued or running, per person
    max_jobs_per_township: PositiveInt = 4  # … and per township
    max_uploads_per_user: PositiveInt = 2  # uploads being received at once, per person
    max_uploads_per_township: PositiveInt = 4  # … and per township
    sync_upload_max_bytes: Annotated[int, msgspec.Meta(ge=0)] = 1 << 20  # smaller uploads load in the request
    # The web console and the residents' page (backend/web): their session cookie is marked Secure
    # (and named with the __Host- prefix) behind TLS; a console session unused this long ends.
    cookie_secure: bool = False
    console_idle_timeout_s: Annotated[int, msgspec.Meta(ge=60, le=86_400)] = 1_800
    # Whom residents call, shown on the residents' page under "how to enrol or pay" (CANBAO_RESIDENT_HELP,
    # e.g. "北山街道医保窗口 0571-8888 0000，工作日 8:30–17:00"); empty: the page says to ask the village
    # or township office.
    resident_help: Annotated[str, msgspec.Meta(max_length=500)] = ""
    # Test-only: a push re-applies mutations it already holds instead of answering `duplicate`.
    # The fault suite turns it on to prove it catches a server that breaks exactly-once; it cannot
    # be set from the environment.
    test_break_push_dedup: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        raw: dict[str, object] = {
            key.removeprefix(PREFIX).lower(): value for key, value in env.items() if key.startswith(PREFIX)
        }
        # Variables used by the test suite or by other tools are not settings of the server.
        raw.pop("test_database_url", None)
        raw.pop("progress", None)  # CANBAO_PROGRESS: the command line's progress bars off a terminal
        if "test_break_push_dedup" in raw:
            raise SettingsError(PREFIX + "TEST_BREAK_PUSH_DEDUP", "is for tests only")
        if env.get("DATABASE_URL"):
            raw["database_url"] = env["DATABASE_URL"]
        try:
            settings = msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise SettingsError(_variable_of(exc), _problem_of(exc)) from None
        settings.check()
        return settings

    def check(self) -> None:
        """Cross-field rules msgspec's per-field constraints cannot express."""

        try:
            memory_settings(0, self.pg_settings)
        except ValueError as exc:
            raise SettingsError("CANBAO_PG_SETTINGS", str(exc).removeprefix("CANBAO_PG_SETTINGS: ")) from None
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise SettingsError("CANBAO_TIMEZONE", f"unknown time zone {self.timezone!r}") from None
        if self.business_clock is not None and self.business_clock.tzinfo is None:
            raise SettingsError("CANBAO_BUSINESS_CLOCK", "must name its offset, e.g. 2026-12-02T02:00:00Z")
        try:
            parse_language(self.language)
        except ValueError as exc:
            raise SettingsError("CANBAO_LANGUAGE", str(exc)) from None
        if self.pool_min_size > self.pool_max_size:
            raise SettingsError("CANBAO_POOL_MIN_SIZE", "must not exceed CANBAO_POOL_MAX_SIZE")
        if self.jwt_secret is not None and len(self.jwt_secret.encode()) < 32:
            raise SettingsError("CANBAO_JWT_SECRET", "must be at least 32 bytes")
        if self.database_url is not None and not re.match(r"postgres(ql)?://", self.database_url):
            raise SettingsError("DATABASE_URL", "must start with postgresql://")
        if self.owner_database_url is not None:
            if not re.match(r"postgres(ql)?://", self.owner_database_url):
                raise SettingsError("CANBAO_OWNER_DATABASE_URL", "must start with postgresql://")
            if self.database_url is None:
                raise SettingsError(
                    "CANBAO_OWNER_DATABASE_URL", "only with DATABASE_URL (the embedded database has its own)"
                )
        for replica in parse_dsns(self.replica_dsns):
            if not re.match(r"postgres(ql)?://", replica):
                raise SettingsError("CANBAO_REPLICA_DSNS", "each must start with postgresql://")
        if self.replica_dsns and self.replica_statement_timeout_s >= self.request_timeout_s:
            raise SettingsError(
                "CANBAO_REPLICA_STATEMENT_TIMEOUT_S",
                "must be below CANBAO_REQUEST_TIMEOUT_S (the primary reads after it)",
            )
        if self.job_heartbeat_s * 2 > self.job_lease_s:
            raise SettingsError("CANBAO_JOB_HEARTBEAT_S", "must be at most half of CANBAO_JOB_LEASE_S")

    @property
    def embedded(self) -> bool:
        return self.database_url is None


def _variable_of(exc: msgspec.ValidationError) -> str:
    message = str(exc)
    if match := re.search(r"`\$\.(\w+)`", message):
        field = match.group(1)
        return "DATABASE_URL" if field == "database_url" else PREFIX + field.upper()
    if match := re.search(r"unknown field `(\w+)`", message):
        return PREFIX + match.group(1).upper()
    return PREFIX + "*"


def _problem_of(exc: msgspec.ValidationError) -> str:
    message = str(exc)
    if "unknown field" in message.lower():
        return "unknown setting"
    return message.split(" - at ", maxsplit=1)[0]
