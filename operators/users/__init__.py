"""Per-user detection: velocity, amount spikes and impossible travel, judged in event-time order.

Pure logic, no I/O: :mod:`operators.steps` wraps :class:`~operators.users.user_risk.UserRisk`
in a Bytewax stateful step.
"""
