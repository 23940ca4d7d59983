"""Prometheus metrics of the collector itself: what it received, stored, refused, and how late.

Rendered by `daemon.metrics.render` (one implementation of the text format), from the
collector's counters and the store's cheap counts (bounded tables, per-node seq ranges).
"""

from __future__ import annotations

from control.collector import CollectorStats
from control.store.records import StoreCounts
from daemon.metrics import Family, Sample, render


def _labelled(name: str, help_text: str, label: str, counts: dict[str, int]) -> Family:
    samples = tuple(Sample(float(n), ((label, key),)) for key, n in sorted(counts.items()))
    return Family(name, "counter", help_text, samples)


def _gauge(name: str, help_text: str, value: float) -> Family:
    return Family(name, "gauge", help_text, (Sample(value),))


def collector_metrics(stats: CollectorStats, counts: StoreCounts, queued: int) -> str:
    snap = stats.snapshot()
    lag_samples = []
    for q in (0.5, 0.99):
        lag = stats.lag_quantile(q)
        if lag is not None:
            lag_samples.append(Sample(lag, (("quantile", str(q)),)))
    families = [
        _labelled(
            "corona_control_messages_received_total",
            "Messages taken from the broker, by kind (quarantined ones included).",
            "kind",
            snap["received"],
        ),
        _labelled(
            "corona_control_messages_stored_total",
            "Rows stored, by kind (a status is stored when it changes).",
            "kind",
            snap["stored"],
        ),
        _labelled(
            "corona_control_messages_quarantined_total",
            "Messages kept in quarantine, by reason.",
            "reason",
            snap["quarantined"],
        ),
        _labelled(
            "corona_control_messages_ignored_total",
            "Messages under the prefix that are not stored (clips), by kind.",
            "kind",
            snap["ignored"],
        ),
        Family(
            "corona_control_duplicates_total",
            "counter",
            "Messages already stored (retained again, or sent again after a reconnect).",
            (Sample(float(snap["duplicates"])),),
        ),
        Family(
            "corona_control_clips_unrequested_total",
            "counter",
            "Clips published that nobody asked for (not stored).",
            (Sample(float(snap["unrequested"])),),
        ),
        Family(
            "corona_control_database_errors_total",
            "counter",
            "Batches the database refused (retried; nothing is acknowledged until stored).",
            (Sample(float(snap["database_errors"])),),
        ),
        Family(
            "corona_control_ingest_lag_seconds",
            "gauge",
            "Live verdicts' window end to commit, over the last ones stored.",
            tuple(lag_samples),
        ),
        _gauge("corona_control_queue_depth", "Messages received, not yet stored.", queued),
        _gauge(
            "corona_control_mqtt_connected",
            "1 while the broker connection is up.",
            1.0 if snap["mqtt_connected"] else 0.0,
        ),
        _gauge(
            "corona_control_database_ok",
            "1 while the last write succeeded.",
            1.0 if snap["database_ok"] else 0.0,
        ),
        _gauge("corona_control_nodes", "Nodes known to the store.", counts.nodes),
        _gauge(
            "corona_control_missing_seqs",
            "Verdict seqs never received, summed over the nodes (the gaps).",
            counts.missing,
        ),
        _gauge(
            "corona_control_quarantine_rows",
            "Rows in the quarantine table.",
            counts.quarantined,
        ),
    ]
    return render(families)
