#!/usr/bin/env python3
"""Publishes one IncidentOpened the way Picket's services do, to try subscribe.py on a test server.

Same subject, headers and payload encoding as crates/platform/src/nats/envelope.rs: the subject
<namespace>.incidents.v1.incident_opened.<partner_id>.<tenant_id>, CloudEvents binary-mode headers
(ce-specversion, ce-id = a UUIDv7, ce-source, ce-type, ce-time, ce-subject), content-type
application/protobuf, Nats-Msg-Id = ce-id, and a W3C traceparent. With --create-stream it first
creates the area's stream, if missing, with the configuration Picket provisions
(crates/platform/src/nats/streams.rs with the default settings).

It refuses the production namespace `picket`: use a namespace of your own on a test server.

    python publish_test_event.py --namespace docs_demo --create-stream
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "generated"))

import nats  # noqa: E402
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig  # noqa: E402
from nats.js.errors import NotFoundError  # noqa: E402

from picket.common.v1 import common_pb2  # noqa: E402
from picket.fixes.v1 import types_pb2 as fixes_types  # noqa: E402
from picket.incidents.v1 import events_pb2, types_pb2  # noqa: E402


def uuid7() -> uuid.UUID:
    """A UUIDv7 (RFC 9562) as Picket's event ids are: 48-bit Unix milliseconds, then random bits."""
    value = (time.time_ns() // 1_000_000) << 80 | secrets.randbits(80)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return uuid.UUID(int=value)


def incident_opened(partner_id: str, tenant_id: str, now: datetime) -> events_pb2.IncidentOpened:
    event = events_pb2.IncidentOpened(partner_id=partner_id, tenant_id=tenant_id)
    incident = event.incident
    incident.incident_id = str(uuid7())
    incident.partner_id = partner_id
    incident.tenant_id = tenant_id
    incident.fingerprint = "f" * 16
    incident.check_id = "aad.mfa-admins"
    incident.kind = common_pb2.FINDING_KIND_CONFIGURATION
    incident.severity = common_pb2.SEVERITY_CRITICAL
    incident.title = "MFA is not required for administrators"
    incident.description = "Administrator accounts without MFA are the fastest path to a full tenant takeover."
    incident.target = "Conditional access"
    incident.recommended_fix = 'Create the conditional access policy "Require MFA for administrators".'
    incident.state = types_pb2.INCIDENT_STATE_OPEN
    incident.opened_at.FromDatetime(now)
    incident.updated_at.FromDatetime(now)
    incident.occurrence_count = 1
    incident.theme = "identity-mfa"
    incident.fix_action = fixes_types.FIX_ACTION_CREATE_CONDITIONAL_ACCESS_POLICY
    incident.fix_parameters["template"] = "require-mfa-admins"
    incident.origin = types_pb2.INCIDENT_ORIGIN_AUTOMATIC
    incident.version = 1
    return event


def headers_for(event, event_id: uuid.UUID, source: str, now: datetime) -> dict[str, str]:
    ce_subject = f"{event.partner_id}/{event.tenant_id}" if event.tenant_id else event.partner_id
    return {
        "ce-specversion": "1.0",
        "ce-id": str(event_id),
        "ce-source": f"/picket/{source}",
        "ce-type": event.DESCRIPTOR.full_name,
        # chrono's to_rfc3339_opts(SecondsFormat::Micros, true): microseconds and a Z.
        "ce-time": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "ce-subject": ce_subject,
        "content-type": "application/protobuf",
        "Nats-Msg-Id": str(event_id),
        "traceparent": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01",
    }


async def main(args: argparse.Namespace) -> None:
    if args.namespace == "picket":
        sys.exit("refusing the production namespace `picket`: pass --namespace of your own")
    options = {"servers": [args.url], "name": "picket-test-publisher"}
    if args.user:
        options.update(user=args.user, password=args.password)
    nc = await nats.connect(**options)
    js = nc.jetstream()
    stream = f"{args.namespace}_incidents".upper()
    if args.create_stream:
        try:
            await js.stream_info(stream)
            print(f"stream {stream} exists", file=sys.stderr)
        except NotFoundError:
            # As streams.rs provisions it with the default [nats] settings of crates/platform/defaults.toml.
            await js.add_stream(
                StreamConfig(
                    name=stream,
                    subjects=[f"{args.namespace}.incidents.v1.>"],
                    retention=RetentionPolicy.LIMITS,
                    storage=StorageType.FILE,
                    discard=DiscardPolicy.OLD,
                    max_age=7 * 24 * 3600,  # stream_max_age = "7d"
                    num_replicas=1,  # stream_replicas = 1
                    duplicate_window=120,  # duplicate_window = "2m"
                )
            )
            print(f"created stream {stream}", file=sys.stderr)
    now = datetime.now(timezone.utc)
    event = incident_opened(args.partner, args.tenant, now)
    subject = f"{args.namespace}.incidents.v1.incident_opened.{args.partner}.{args.tenant or '_'}"
    event_id = uuid7()
    headers = headers_for(event, event_id, "prioritizer", now)
    payload = event.SerializeToString()
    for attempt in range(1 + args.repeat):
        ack = await js.publish(subject, payload, headers=headers)
        print(f"published {subject} ce-id {event_id}: stream {ack.stream} seq {ack.seq} duplicate={bool(ack.duplicate)}")
    await nc.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    parser.add_argument("--user", default=os.environ.get("NATS_USER", ""))
    parser.add_argument("--password", default=os.environ.get("NATS_PASSWORD", ""))
    parser.add_argument("--namespace", required=True, help="subject namespace of a test deployment, not picket")
    parser.add_argument("--partner", default="p-acme")
    parser.add_argument("--tenant", default="0b9c6a43-6a59-4f3e-9f25-2d4c3c8f1e7a")
    parser.add_argument("--create-stream", action="store_true", help="create <NAMESPACE>_INCIDENTS if missing")
    parser.add_argument("--repeat", type=int, default=0, help="publish the same event (same Nats-Msg-Id) again N times")
    asyncio.run(main(parser.parse_args()))
