"""One labelled scenario replayed as files in several layouts gives the same alerts.

The layouts are what real streams look like: one partition; events spread
round-robin (an unkeyed producer); keyed by user; and contiguous stretches of
event time per partition, read at once (a backfill or a replay after an outage:
each partition minutes ahead of the previous one).
"""

from __future__ import annotations

import pytest

from evaluation.__main__ import evaluate, main
from operators import alerts

USER_TYPES = (alerts.VELOCITY, alerts.AMOUNT_SPIKE, alerts.IMPOSSIBLE_TRAVEL)
LAYOUTS = [("round-robin", 1), ("round-robin", 4), ("time-ranges", 4), ("by-user", 3)]
MIX = {"scenario": "mixed", "events": 60_000, "seed": 3, "event_rate": 50, "users": 2_000}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The mix (1,200 s of event time, every incident kind) in each layout."""
    out = {}
    for layout, n in LAYOUTS:
        directory = tmp_path_factory.mktemp(f"{layout}-{n}")
        out[(layout, n)] = evaluate(directory, partitions=n, layout=layout, timeline=False, **MIX)
    return out


def _alert_set(evaluation, exclude=()):
    return {
        (a["type"], a["key"], a["state"], a["event_time"]) for a in evaluation.output.alerts if a["type"] not in exclude
    }


def test_every_layout_gives_the_same_alerts(runs):
    reference = _alert_set(runs[LAYOUTS[0]])
    assert {a[0] for a in reference} == set(alerts.ALERT_TYPES)
    assert {a[2] for a in reference} == {alerts.OPEN, alerts.RESOLVED}
    for key, evaluation in runs.items():
        assert _alert_set(evaluation) == reference, key
        assert evaluation.output.n_events == runs[LAYOUTS[0]].output.n_events, key


def test_every_layout_passes_the_bar(runs):
    for key, evaluation in runs.items():
        assert evaluation.bar["passed"], (key, evaluation.bar["failures"])
        for name in USER_TYPES:
            report = evaluation.reports[name]
            assert report.labels >= 1, (key, name)
            assert (report.recall, report.precision, report.false_alerts) == (1.0, 1.0, 0), (key, name)


def test_layout_files_partition_the_stream(runs):
    evaluation = runs[("by-user", 3)]
    files = sorted((evaluation.output.out_dir / "input").glob("part-*.jsonl"))
    assert [f.name for f in files] == ["part-0.jsonl", "part-1.jsonl", "part-2.jsonl"]
    owners: dict[bytes, int] = {}
    for index, path in enumerate(files):
        for line in path.read_bytes().splitlines():
            user = line.split(b'"user_id":"', 1)[1].split(b'"', 1)[0] if b'"user_id":"' in line else None
            if user is not None:
                assert owners.setdefault(user, index) == index  # a user's events all in one file
    assert len(set(owners.values())) == 3
    assert evaluation.document["run"]["layout"] == {"name": "by-user", "files": 3}


def test_command_line_takes_a_layout(tmp_path, capsys):
    code = main(
        [
            *("--events", "12000", "--event-rate", "50", "--users", "2000", "--seed", "3"),
            *("--scenario", "velocity_attack", "--partitions", "3", "--layout", "time-ranges"),
            *("--out", str(tmp_path), "--no-timeline", "--check"),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0 and "bar (issue 7): PASS" in printed
    assert len(list((tmp_path / "input").glob("part-*.jsonl"))) == 3


def test_unknown_layout_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        main(["--layout", "diagonal", "--out", str(tmp_path)])
