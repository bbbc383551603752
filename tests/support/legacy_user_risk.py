"""The user rules as they were before they moved to columns (issue 14): a user per dict entry.

Kept as the reference the columnar :class:`operators.users.user_risk.UserRisk` is compared
with, alert for alert (type, user, transaction, value, details, order), and as the writer of
format 2 snapshots (dict-of-lists users) that the format 3 migration must read. A verbatim copy
of ``operators/users/user_risk.py`` at commit 48a55cf, the shard wrapper left out.
"""

from __future__ import annotations

import heapq
import pickle
from bisect import bisect_left, bisect_right, insort
from typing import Any, Union

from config.settings import RuleSettings, UserSettings
from operators import alerts

# Per-user state is a list (cheaper than an object; pickled at snapshots).
_LAST_TS = 0  # newest event time seen for the user
_LAST_REGION = 1
_WINDOW_TS = 2  # event times within the velocity window, sorted
_WINDOW_AMOUNTS = 3  # their amounts, in the same order
_WINDOW_SUM = 4
_AMOUNTS = 5  # the last history_size amounts, oldest first
_SORTED = 6  # the same amounts, sorted: the median in O(1), updates by bisection
_VELOCITY_UNTIL = 7  # cooldown ends (event time)
_SPIKE_UNTIL = 8
_TRAVEL_UNTIL = 9

_NEVER = float("-inf")
_SWEEPS_PER_IDLE_TIME = 8
_CAP_SLACK = 1.1


def _last_ts(item: tuple[str, list]) -> float:
    return item[1][_LAST_TS]


class UserRisk:
    """The users of one shard and the rules applied to them."""

    def __init__(self, rules: RuleSettings, users: UserSettings, state: Union[bytes, tuple, None] = None) -> None:
        self.velocity = rules.velocity
        self.spike = rules.amount_spike
        self.travel = rules.impossible_travel
        self.idle_seconds = users.idle_seconds
        self.max_users = max(1, users.max_users // users.shards)
        self._sweep_above = int(self.max_users * _CAP_SLACK)
        self.users: dict[str, list] = {}
        self.newest = _NEVER
        self.next_sweep = _NEVER
        if state is not None:
            self.users, self.newest, self.next_sweep = pickle.loads(state) if isinstance(state, bytes) else state

    def state(self) -> tuple:
        """The users and sweep clock (live objects: pickle before mutating again)."""
        return (self.users, self.newest, self.next_sweep)

    def snapshot(self) -> bytes:
        """Pickled now, so later mutation cannot leak into the snapshot."""
        return pickle.dumps(self.state(), protocol=pickle.HIGHEST_PROTOCOL)

    def __len__(self) -> int:
        return len(self.users)

    def use_rules(self, rules: RuleSettings) -> None:
        """Judge the next events by new thresholds (live rules; window lengths unchanged)."""
        self.velocity = rules.velocity
        self.spike = rules.amount_spike
        self.travel = rules.impossible_travel

    def process(self, events: list[tuple]) -> list[dict[str, Any]]:
        """Apply the rules to ``(user_id, ts, amount, region, txn)`` events in order."""
        users = self.users
        out: list[dict[str, Any]] = []
        spike_factor = self.spike.factor
        min_history = self.spike.min_history
        history_size = self.spike.history_size
        velocity_window = self.velocity.window_seconds
        max_count = self.velocity.max_count
        max_amount = self.velocity.max_amount
        travel_window = self.travel.window_seconds
        idle_seconds = self.idle_seconds
        newest = self.newest

        for user_id, ts, amount, region, txn in events:
            if ts > newest:
                newest = ts
            paid = amount or 0.0
            user = users.get(user_id)
            if user is None or ts - user[_LAST_TS] > idle_seconds:
                # First payment (or first after an idle time): only the
                # velocity amount limit can fire.
                history = [] if amount is None else [amount]
                user = [ts, region, [ts], [paid], paid, history, history[:], _NEVER, _NEVER, _NEVER]
                users[user_id] = user
                if paid > max_amount:
                    out.append(self._velocity_alert(user_id, txn, ts, region, 1, paid))
                    user[_VELOCITY_UNTIL] = ts + self.velocity.cooldown_seconds
                continue
            last_ts, last_region, times, amounts, total, history, ordered, _, _, _ = user

            # Impossible travel: against the previous payment's region and time.
            if region != last_region and abs(ts - last_ts) <= travel_window:
                if ts > user[_TRAVEL_UNTIL]:
                    out.append(self._travel_alert(user_id, txn, ts, region, last_region, abs(ts - last_ts)))
                user[_TRAVEL_UNTIL] = ts + self.travel.cooldown_seconds
            if ts >= last_ts:
                user[_LAST_TS] = ts
                user[_LAST_REGION] = region

            # Velocity over the trailing window (relative to the newest event).
            if ts >= times[-1]:
                if times[-1] <= ts - velocity_window:
                    # The usual case: everything before has left the window.
                    times = user[_WINDOW_TS] = [ts]
                    amounts = user[_WINDOW_AMOUNTS] = [paid]
                    total = 0.0
                else:
                    times.append(ts)
                    amounts.append(paid)
            else:
                index = bisect_right(times, ts)
                times.insert(index, ts)
                amounts.insert(index, paid)
            total += paid
            cutoff = times[-1] - velocity_window
            if times[0] <= cutoff:
                expired = bisect_right(times, cutoff)
                for old in amounts[:expired]:
                    total -= old
                del times[:expired], amounts[:expired]
            user[_WINDOW_SUM] = total
            count = len(times)
            if count > max_count or total > max_amount:
                if ts > user[_VELOCITY_UNTIL]:
                    out.append(self._velocity_alert(user_id, txn, ts, region, count, total))
                user[_VELOCITY_UNTIL] = ts + self.velocity.cooldown_seconds

            # Amount spike against the median of the user's recent amounts.
            if amount is not None:
                size = len(ordered)
                if size >= min_history:
                    mid = size // 2
                    typical = ordered[mid] if size % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0
                    if typical > 0 and amount >= spike_factor * typical:
                        if ts > user[_SPIKE_UNTIL]:
                            out.append(self._spike_alert(user_id, txn, ts, region, amount, typical))
                        user[_SPIKE_UNTIL] = ts + self.spike.cooldown_seconds
                if size == history_size:
                    del ordered[bisect_left(ordered, history.pop(0))]
                history.append(amount)
                insort(ordered, amount)

        self.newest = newest
        if newest >= self.next_sweep or len(users) > self._sweep_above:
            self._sweep()
        return out

    def _sweep(self) -> None:
        """Drop users idle for ``idle_seconds`` of event time, then the least recent beyond the cap."""
        horizon = self.newest - self.idle_seconds
        users = {user_id: user for user_id, user in self.users.items() if user[_LAST_TS] >= horizon}
        if len(users) > self.max_users:
            users = dict(heapq.nlargest(self.max_users, users.items(), key=_last_ts)[::-1])
        self.users = users
        self.next_sweep = self.newest + self.idle_seconds / _SWEEPS_PER_IDLE_TIME

    # -- alert records ---------------------------------------------------------

    def _velocity_alert(self, user_id: str, txn: str, ts: float, region: str, count: int, total: float) -> dict:
        rule = self.velocity
        by_count = count > rule.max_count
        value, threshold = (float(count), float(rule.max_count)) if by_count else (round(total, 2), rule.max_amount)
        what = f"{count} payments" if by_count else f"{total:.2f} in payments"
        return alerts.make_alert(
            alerts.VELOCITY,
            alerts.OPEN,
            user_id,
            f"{alerts.VELOCITY}:{user_id}:{txn}",
            ts,
            value,
            threshold,
            f"user {user_id} made {what} within {rule.window_seconds:g}s",
            region=region,
            user_id=user_id,
            transaction_id=txn,
            details={
                "count": count,
                "amount_sum": round(total, 2),
                "window_seconds": rule.window_seconds,
                "limit": "count" if by_count else "amount",
            },
        )

    def _spike_alert(self, user_id: str, txn: str, ts: float, region: str, amount: float, typical: float) -> dict:
        factor = amount / typical
        return alerts.make_alert(
            alerts.AMOUNT_SPIKE,
            alerts.OPEN,
            user_id,
            f"{alerts.AMOUNT_SPIKE}:{user_id}:{txn}",
            ts,
            round(factor, 2),
            self.spike.factor,
            f"user {user_id} paid {amount:g}, {factor:.1f}x their typical {typical:g}",
            region=region,
            user_id=user_id,
            transaction_id=txn,
            details={"amount": amount, "typical_amount": typical},
        )

    def _travel_alert(self, user_id: str, txn: str, ts: float, region: str, previous: str, gap: float) -> dict:
        return alerts.make_alert(
            alerts.IMPOSSIBLE_TRAVEL,
            alerts.OPEN,
            user_id,
            f"{alerts.IMPOSSIBLE_TRAVEL}:{user_id}:{txn}",
            ts,
            round(gap, 3),
            self.travel.window_seconds,
            f"user {user_id} paid from {region} {gap:.0f}s after paying from {previous}",
            region=region,
            user_id=user_id,
            transaction_id=txn,
            details={"from_region": previous, "to_region": region, "seconds_between": round(gap, 3)},
        )
