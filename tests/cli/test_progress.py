"""The progress bar's columns: images done of total, the rate (items a second) and the ETA."""

from __future__ import annotations

from rich.progress import Progress

from retrieval.cli.common import rate_column


def test_therate_column_shows_items_a_second() -> None:
    now = [0.0]
    bars = Progress(get_time=lambda: now[0])
    task = bars.add_task("embedding", total=100)
    column = rate_column()
    assert column.render(bars.tasks[0]).plain == "-/s"  # nothing measured yet
    for step in range(1, 5):
        now[0] = step * 2.0
        bars.update(task, completed=step * 10)  # 10 images every 2 s
    assert column.render(bars.tasks[0]).plain == "5.0/s"
    now[0] = 30.0
    bars.update(task, completed=100)
    assert column.render(bars.tasks[0]).plain.endswith("/s")
