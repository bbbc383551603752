"""What one input event is and when it happened.

- ``contract``: the field rules and limits of an event, written once, and the
  exact dead-letter reason for a line that breaks them;
- ``decoder``: a chunk of lines decoded into the contract's typed structs in C;
- ``timestamps``: event times parsed with their halves cached, and printed;
- ``partition_time``: a source partition's high mark and lateness, robust to
  one producer with a wrong clock.
"""
