"""Reading a /metrics page (Prometheus text) in tests, with prometheus-client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def metric_sum(text: str, sample: str, **labels: str) -> float:
    """The sum of the samples named ``sample`` (``rotabot_x_total``, not the family name)
    whose labels include ``labels``; 0 when there are none."""
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == sample and labels.items() <= s.labels.items()
    )
