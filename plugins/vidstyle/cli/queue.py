"""``vidstyle queue``: create the arrivals queue and its poison queue where missing (on Azure,
where Event Grid writes the blob-created events; locally, on Azurite), or show what they hold.

    vidstyle queue              create if missing (what `vidstyle ui`, `cluster start` and compose run)
    vidstyle queue --show       messages waiting, and the poison queue's
"""

from __future__ import annotations

import argparse

from vidstyle.cli import local


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--show", action="store_true", help="print how many messages wait in each queue")


def run(a: argparse.Namespace) -> int:
    local.apply()
    from vidstyle.hooks.queue_store import QueueStore, poison_queue
    from vidstyle.pipeline.arrivals import ensure_queue
    from vidstyle.pipeline.settings import arrivals_conn_id, arrivals_queue, load_settings

    settings = load_settings()
    if settings.arrivals != "storage_queue":
        print(f"arrivals = {settings.arrivals}: no Storage Queue to make (a Service Bus queue is made with az)")
        return 0
    created = ensure_queue(settings)
    name = arrivals_queue(settings)
    for queue in (name, poison_queue(name)):
        print(f"{queue}: {'created' if queue in created else 'exists'}")
    if a.show:
        queues = QueueStore(arrivals_conn_id(settings))
        for queue in (name, poison_queue(name)):
            print(f"{queue}: {queues.length(queue)} messages")
    return 0
