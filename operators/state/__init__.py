"""What stateful steps keep across restarts: versioned snapshot formats (:mod:`operators.state.snapshots`)."""
