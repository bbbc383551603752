"""Pure stream logic: the event contract, parsing, scoring, windows, user rules, privacy, live rules."""
