"""Diagnose the configured transports: is Kafka reachable, is S3 reachable and authenticated,
are the topics and the bucket there? Each check is one fast attempt, never a retry loop."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel

from vlgenrm.bus.base import Topics
from vlgenrm.retry import Backoff
from vlgenrm.settings import BusKind, Settings, StoreKind
from vlgenrm.store.base import StoreAuthError, StoreError, StoreUnavailableError


class CheckStatus(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


class Check(BaseModel):
    """One line of the diagnosis."""

    component: str
    check: str
    status: CheckStatus
    detail: str


def check_bus(settings: Settings, *, fix: bool = False) -> list[Check]:
    bus = settings.bus
    if bus.kind is BusKind.MEMORY:
        return [Check(component="bus", check="kind", status=CheckStatus.OK, detail="in-memory bus (embedded; nothing to reach)")]
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    from vlgenrm.bus.kafka import KafkaBus

    where = f"Kafka at {bus.bootstrap_servers}"
    kafka = KafkaBus(bus.model_copy(update={"publish_retry": Backoff(max_attempts=1)}))
    try:
        admin = KafkaAdminClient(**kafka._common())
    except KafkaError as exc:
        return [Check(component="bus", check="reachable", status=CheckStatus.FAIL, detail=f"{where} does not answer: {exc!r}")]
    checks = [Check(component="bus", check="reachable", status=CheckStatus.OK, detail=f"{where} answered")]
    try:
        existing = set(admin.list_topics())
        checks.append(Check(component="bus", check="authenticated", status=CheckStatus.OK, detail=f"listed {len(existing)} topics as {bus.security_protocol}"))
        wanted = Topics(bus.topic_prefix).all()
        missing = [t for t in wanted if t not in existing]
        if missing and fix:
            kafka._admin = admin
            kafka.ensure_topics(missing)
            checks.append(Check(component="bus", check="topics", status=CheckStatus.OK, detail=f"created {', '.join(missing)}"))
        elif missing:
            checks.append(
                Check(
                    component="bus", check="topics", status=CheckStatus.WARN, detail=f"missing {', '.join(missing)} (created on first use, or run with --fix)"
                )
            )
        else:
            checks.append(Check(component="bus", check="topics", status=CheckStatus.OK, detail=f"all {len(wanted)} topics present"))
    except KafkaError as exc:
        checks.append(Check(component="bus", check="authenticated", status=CheckStatus.FAIL, detail=f"{where} refused the request: {exc!r}"))
    finally:
        admin.close()
    return checks


def check_store(settings: Settings, *, fix: bool = False) -> list[Check]:
    store = settings.store
    if store.kind is StoreKind.LOCAL:
        from vlgenrm.store.local import LocalStore

        try:
            local = LocalStore(store.root)
            local.put_bytes(".doctor/probe", b"ok")
            local.delete(".doctor/probe")
        except (StoreError, OSError) as exc:
            return [Check(component="store", check="writable", status=CheckStatus.FAIL, detail=str(exc))]
        return [Check(component="store", check="writable", status=CheckStatus.OK, detail=f"local store at {local.root}")]
    from vlgenrm.store.s3 import S3Store

    s3 = S3Store(store.model_copy(update={"retry": Backoff(max_attempts=1), "create_bucket": fix}))
    where = f"S3 at {store.endpoint}"
    try:
        present = s3._call(lambda: s3.client.bucket_exists(store.bucket), "bucket check", retry=False)
    except StoreUnavailableError as exc:
        return [Check(component="store", check="reachable", status=CheckStatus.FAIL, detail=str(exc))]
    except StoreAuthError as exc:
        return [
            Check(component="store", check="reachable", status=CheckStatus.OK, detail=f"{where} answered"),
            Check(component="store", check="authenticated", status=CheckStatus.FAIL, detail=str(exc)),
        ]
    checks = [
        Check(component="store", check="reachable", status=CheckStatus.OK, detail=f"{where} answered"),
        Check(component="store", check="authenticated", status=CheckStatus.OK, detail=f"access key {store.access_key!r} accepted"),
    ]
    if present:
        checks.append(Check(component="store", check="bucket", status=CheckStatus.OK, detail=f"bucket {store.bucket!r} present"))
    elif fix:
        s3.ensure_bucket()
        checks.append(Check(component="store", check="bucket", status=CheckStatus.OK, detail=f"created bucket {store.bucket!r}"))
    else:
        checks.append(
            Check(component="store", check="bucket", status=CheckStatus.FAIL, detail=f"bucket {store.bucket!r} missing (run with --fix to create it)")
        )
    s3.close()
    return checks


def diagnose(settings: Settings, *, fix: bool = False) -> list[Check]:
    return check_bus(settings, fix=fix) + check_store(settings, fix=fix)
