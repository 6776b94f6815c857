#!/usr/bin/env python3
"""Reads Picket events from NATS JetStream and prints each one as JSON.

Binds a durable pull consumer on one area's stream (PICKET_INCIDENTS by default) with a filter
subject, decodes every message into the protobuf type its subject names, prints it with
google.protobuf.json_format (canonical protobuf JSON, the form Picket's webhooks use), and acks it.

    ./generate.sh                                   # once: protobuf modules into ./generated
    NATS_URL=nats://nats.example.net:4222 NATS_USER=integrator NATS_PASSWORD=... \
        python subscribe.py --area incidents --durable integrator-1

As user integrator the durable name must be integrator-1, integrator-2 or integrator-3 (one set per
stream; deploy/nats/nats-server.conf refuses any other name).

See docs/integrators.md for the subjects, headers, ack and ordering rules this follows.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import importlib
import json
import os
import re
import signal
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
GENERATED = HERE / "generated"
sys.path.insert(0, str(GENERATED))

import nats  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from google.protobuf.message import DecodeError, Message  # noqa: E402
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy  # noqa: E402

# Picket's subjects: <namespace>.<area>.v1.<event>.<partner_id>.<tenant_id>, tenant `_` when none.
NO_TENANT = "_"


def snake_case(name: str) -> str:
    """IncidentOpened -> incident_opened: how Picket names an event in its subject."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def event_table() -> dict[tuple[str, str], type[Message]]:
    """(area, event token) -> message class, from the generated modules.

    Every message of proto/picket/<area>/v1/events.proto is an event, published under the
    snake_case of its name; its full name (picket.<area>.v1.<Name>) is the `ce-type` header.
    """
    modules = sorted(GENERATED.glob("picket/*/v1/events_pb2.py"))
    if not modules:
        sys.exit(f"no generated modules under {GENERATED}: run ./generate.sh first")
    table: dict[tuple[str, str], type[Message]] = {}
    for path in modules:
        area = path.parent.parent.name
        module = importlib.import_module(f"picket.{area}.v1.events_pb2")
        for name in module.DESCRIPTOR.message_types_by_name:
            table[(area, snake_case(name))] = getattr(module, name)
    return table


class Rejected(Exception):
    """The message can never be handled (foreign subject, wrong type, undecodable)."""


def parse_subject(subject: str, namespace: str) -> tuple[str, str, str, str | None]:
    tokens = subject.split(".")
    if len(tokens) != 6 or tokens[0] != namespace or tokens[2] != "v1":
        raise Rejected(f"{subject} is not a {namespace}.<area>.v1.<event>.<partner>.<tenant> subject")
    _, area, _, event, partner_id, tenant_id = tokens
    return area, event, partner_id, None if tenant_id == NO_TENANT else tenant_id


def process(envelope: dict, event: Message) -> None:
    """Your integration goes here. Raise to have the message redelivered later.

    Apply each event once: record envelope["id"] (the CloudEvents id, also Nats-Msg-Id) in your own
    store in the same transaction as the effect, and skip ids you have seen.
    """
    print(json.dumps(envelope, indent=2 if ARGS.pretty else None), flush=True)


class Subscriber:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.table = event_table()
        # Demo-only de-duplication in memory; a real integrator keeps processed ids durably.
        self.seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.handled = 0

    def remember(self, event_id: str) -> None:
        self.seen[event_id] = None
        while len(self.seen) > 100_000:
            self.seen.popitem(last=False)

    async def handle(self, msg) -> None:
        headers = msg.headers or {}
        meta = msg.metadata
        try:
            area, token, partner_id, tenant_id = parse_subject(msg.subject, self.args.namespace)
            message_class = self.table.get((area, token))
            if message_class is None:
                # An event this client has no type for (a newer Picket): skip it, keep the stream moving.
                print(f"skipping unknown event {msg.subject} (ce-type {headers.get('ce-type')})", file=sys.stderr)
                await msg.ack()
                return
            full_name = message_class.DESCRIPTOR.full_name
            if headers.get("content-type") != "application/protobuf":
                raise Rejected(f"content-type is {headers.get('content-type')!r}, not application/protobuf")
            if headers.get("ce-type") != full_name:
                raise Rejected(f"ce-type {headers.get('ce-type')!r} does not match the subject's {full_name}")
            event_id = headers.get("ce-id", "")
            if event_id in self.seen:
                print(f"duplicate {event_id} (delivery {meta.num_delivered}), acked again", file=sys.stderr)
                await msg.ack()
                return
            event = message_class()
            try:
                event.ParseFromString(msg.data)
            except DecodeError as error:
                raise Rejected(f"payload does not decode as {full_name}: {error}") from error
            # Picket's own consumers refuse a payload whose ids disagree with its subject.
            if event.partner_id != partner_id or (event.tenant_id or None) != tenant_id:
                raise Rejected("partner_id or tenant_id in the payload differs from the subject")
        except Rejected as error:
            # Never deliverable: terminate it so the server stops redelivering it.
            print(f"rejected stream sequence {meta.sequence.stream} on {msg.subject}: {error}", file=sys.stderr)
            await msg.term()
            return

        envelope = {
            "subject": msg.subject,
            "streamSequence": meta.sequence.stream,
            "delivered": meta.num_delivered,
            "id": event_id,
            "type": headers.get("ce-type"),
            "source": headers.get("ce-source"),
            "time": headers.get("ce-time"),
            "ceSubject": headers.get("ce-subject"),
            "traceparent": headers.get("traceparent"),
            "data": json_format.MessageToDict(event),
        }
        try:
            process(envelope, event)
        except Exception as error:  # noqa: BLE001 - any failure of the integration is retried
            delay = min(2 ** meta.num_delivered, 300)
            print(f"processing {event_id} failed ({error}); redelivery in {delay}s", file=sys.stderr)
            await msg.nak(delay=delay)
            return
        # Ack only after the effect is done: an unacked message comes back after ack_wait.
        await msg.ack()
        self.remember(event_id)
        self.handled += 1

    async def run(self) -> None:
        args = self.args

        async def on_error(error: Exception) -> None:
            # The server reports a refused subject here (for instance a durable name the user may
            # not use); the request that caused it then times out.
            print(error, file=sys.stderr)

        options = {"servers": [args.url], "name": "picket-python-subscriber", "error_cb": on_error}
        if args.user:
            options.update(user=args.user, password=args.password)
        nc = await nats.connect(**options)
        js = nc.jetstream()
        stream = args.stream or f"{args.namespace}_{args.area}".upper()
        filter_subject = args.filter or f"{args.namespace}.{args.area}.v1.>"
        config = ConsumerConfig(
            durable_name=args.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.NEW if args.deliver == "new" else DeliverPolicy.ALL,
            ack_wait=args.ack_wait,
            max_ack_pending=args.max_ack_pending,
            filter_subject=filter_subject,
        )
        # Creates the durable consumer on first run, binds to it afterwards. The stream is named
        # explicitly: the integrator user may not look streams up by subject ($JS.API.STREAM.NAMES).
        sub = await js.pull_subscribe(filter_subject, durable=args.durable, stream=stream, config=config)
        info = await sub.consumer_info()
        if info.config.filter_subject != filter_subject:
            print(
                f"consumer {args.durable} exists with filter {info.config.filter_subject!r}, not "
                f"{filter_subject!r}: it keeps its own; pick another --durable for another filter",
                file=sys.stderr,
            )
        print(
            f"consuming {stream} as {args.durable} (filter {info.config.filter_subject}, "
            f"{info.num_pending} pending)",
            file=sys.stderr,
        )

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        idle = 0.0
        while not stop.is_set():
            try:
                msgs = await sub.fetch(batch=args.batch, timeout=args.wait)
            except asyncio.TimeoutError:  # nats.errors.TimeoutError is one too
                idle += args.wait
                if args.exit_when_idle and idle >= args.exit_when_idle:
                    break
                continue
            idle = 0.0
            # One at a time, in stream order (redeliveries aside), as long as one process reads.
            for msg in msgs:
                await self.handle(msg)
                if args.max_messages and self.handled >= args.max_messages:
                    stop.set()
                    break
        # Acks are fire-and-forget: flush them to the server before leaving.
        await nc.flush()
        await nc.close()


def arguments() -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=env("NATS_URL", "nats://127.0.0.1:4222"), help="NATS URL (NATS_URL)")
    parser.add_argument("--user", default=env("NATS_USER", ""), help="NATS user, e.g. integrator (NATS_USER)")
    parser.add_argument("--password", default=env("NATS_PASSWORD", ""), help="its password (NATS_PASSWORD)")
    parser.add_argument("--namespace", default=env("PICKET_NAMESPACE", "picket"), help="subject namespace (default picket)")
    parser.add_argument("--area", default="incidents", help="tenants, findings, fixes, incidents, notifications, ledger or offboarding")
    parser.add_argument("--stream", help="stream name (default <NAMESPACE>_<AREA>, e.g. PICKET_INCIDENTS)")
    parser.add_argument("--filter", help="filter subject (default <namespace>.<area>.v1.>)")
    parser.add_argument("--durable", default=env("PICKET_DURABLE", "integrator-1"), help="durable consumer name (user integrator: integrator-1, -2 or -3)")
    parser.add_argument("--deliver", choices=("all", "new"), default="all", help="where a new consumer starts (default all)")
    parser.add_argument("--ack-wait", type=float, default=30.0, help="seconds before an unacked message is redelivered")
    parser.add_argument("--max-ack-pending", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=32, help="messages per pull")
    parser.add_argument("--wait", type=float, default=5.0, help="seconds one pull waits for messages")
    parser.add_argument("--max-messages", type=int, default=0, help="stop after this many events (0 = run until Ctrl-C)")
    parser.add_argument("--exit-when-idle", type=float, default=0.0, help="stop after this many seconds without a message")
    parser.add_argument("--pretty", action="store_true", help="indent the JSON")
    return parser.parse_args()


ARGS = arguments() if __name__ == "__main__" else argparse.Namespace(pretty=False)

if __name__ == "__main__":
    asyncio.run(Subscriber(ARGS).run())
