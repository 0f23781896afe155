"""Prometheus text and gateway_stats lines from the same samples."""

from __future__ import annotations

from gateway.core.metrics import Sample, influx_lines, prometheus_text

SAMPLES = [
    Sample("scc_messages_total", 5, (("kind", "smoke"),), help="valid messages"),
    Sample("scc_messages_total", 2, (("kind", "bin"),)),
    Sample("scc_spool_bytes", 10, kind="gauge"),
    Sample("scc_batch_process_seconds", 0.25, kind="gauge"),
    Sample("scc_dead_letters_total", 1, (("reason", 'odd "one"'),)),
]


def test_prometheus_text() -> None:
    text = prometheus_text(SAMPLES)
    assert text.splitlines() == [
        "# HELP scc_messages_total valid messages",
        "# TYPE scc_messages_total counter",
        'scc_messages_total{kind="smoke"} 5',
        'scc_messages_total{kind="bin"} 2',
        "# TYPE scc_spool_bytes gauge",
        "scc_spool_bytes 10",
        "# TYPE scc_batch_process_seconds gauge",
        "scc_batch_process_seconds 0.25",
        "# TYPE scc_dead_letters_total counter",
        'scc_dead_letters_total{reason="odd \\"one\\""} 1',
    ]


def test_influx_lines() -> None:
    lines = influx_lines(SAMPLES, "gw 1", 7)
    assert lines == [
        r"gateway_stats,gateway=gw\ 1 spool_bytes=10i,batch_process_seconds=0.25 7",
        r"gateway_stats,gateway=gw\ 1,kind=smoke messages=5i 7",
        r"gateway_stats,gateway=gw\ 1,kind=bin messages=2i 7",
        r'gateway_stats,gateway=gw\ 1,reason=odd\ "one" dead_letters=1i 7',
    ]
