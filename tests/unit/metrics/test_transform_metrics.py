"""The transform pool's stats as Prometheus families (`Metrics.watch_transforms`)."""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families

from imgproxy.core.stats import TransformStats
from imgproxy.metrics import Metrics
from imgproxy.transform.pool import REJECTIONS, SECONDS_BUCKETS


def stats() -> TransformStats:
    """A snapshot with known figures."""
    cumulative = [(bound, 1 if bound >= 0.05 else 0) for bound in SECONDS_BUCKETS]
    return TransformStats(
        slots=2,
        running=1,
        queued=3,
        max_queue=64,
        transforms={"webp": 4, "jpeg": 1},
        seconds_buckets=(*cumulative, (math.inf, 5)),
        seconds_sum=0.75,
        rejected={**dict.fromkeys(REJECTIONS, 0), "busy": 2},
        killed=1,
    )


def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, keyed by name and sorted labels."""
    metrics = Metrics()
    metrics.watch_transforms(stats)
    found = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_transforms_are_counted_by_format() -> None:
    """imgproxy_transforms_total has one series per output format."""
    found = samples()
    assert found["imgproxy_transforms_total", (("format", "webp"),)] == 4
    assert found["imgproxy_transforms_total", (("format", "jpeg"),)] == 1


def test_seconds_is_a_histogram_with_sum_and_count() -> None:
    """The histogram carries the pool's cumulative buckets, +Inf, sum and count."""
    found = samples()
    assert found["imgproxy_transform_seconds_bucket", (("le", "0.025"),)] == 0
    assert found["imgproxy_transform_seconds_bucket", (("le", "0.05"),)] == 1
    assert found["imgproxy_transform_seconds_bucket", (("le", "+Inf"),)] == 5
    assert found["imgproxy_transform_seconds_count", ()] == 5
    assert found["imgproxy_transform_seconds_sum", ()] == 0.75


def test_queue_slots_rejections_and_kills() -> None:
    """Gauges for queue, running and slots; counters for rejections by reason and kills."""
    found = samples()
    assert found["imgproxy_transform_queued", ()] == 3
    assert found["imgproxy_transform_running", ()] == 1
    assert found["imgproxy_transform_slots", ()] == 2
    assert found["imgproxy_transform_rejected_total", (("reason", "busy"),)] == 2
    assert found["imgproxy_transform_rejected_total", (("reason", "timeout"),)] == 0
    assert found["imgproxy_transform_killed_total", ()] == 1


def test_metrics_does_not_import_the_pool_or_pyvips() -> None:
    """Importing the metrics module leaves pyvips unloaded (transforms may be off)."""
    import subprocess
    import sys

    code = (
        "import sys, imgproxy.app; print('pyvips' in sys.modules, 'imgproxy.transform.pool' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
