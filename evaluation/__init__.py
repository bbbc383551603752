"""Detection quality: run the real dataflow on labelled simulator traffic and score its alerts.

``python -m evaluation`` (see docs/detection.md) runs the dataflow bounded on
a scenario mix, matches its alerts to the simulator's ground-truth labels and
reports precision, recall, detection delay and false alerts per alert type,
as a terminal table, a JSON report and a PNG timeline.
"""
