"""Helpers every test file shares: settings files, running the flow, reading its output.

- :mod:`tests.support.config`: one builder for settings files and in-memory settings.
- :mod:`tests.support.flow`: the flow in-process (``run_main``) or as a process
  (``python -m bytewax.run dataflow``), with or without a recovery directory.
- :mod:`tests.support.output`: what the JSONL sinks wrote.
"""
