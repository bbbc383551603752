"""Kinesis shard lineages: which shards one source partition reads, in what order.

A split closes a shard and opens two children; a merge closes two shards and
opens one child. Records of a key move from parent to child, so a parent
must be read to its end before its children, or per-key order (which the
per-user rules rely on) and the watermark break. Paywatch therefore makes
one Bytewax partition per *lineage*: a root shard (one with no parent in
the current listing) and every shard descended from it through
``ParentShardId``. Resharding never changes the set of roots, so partition
names (and their recovery state) stay stable across splits and merges.

A merge child has a second parent (``AdjacentParentShardId``) that may sit
in another lineage; that lineage ends at its closed shard, and the child is
read by the lineage of ``ParentShardId``. Both parents are read completely;
only the relative order of the adjacent parent's tail and the child's head
is not guaranteed (documented in docs/sources.md).
"""

from __future__ import annotations

from typing import Any


def list_all_shards(client: Any, stream_name: str) -> list[dict]:
    """Every shard ListShards returns for the stream (follows NextToken)."""
    shards: list[dict] = []
    response = client.list_shards(StreamName=stream_name)
    shards.extend(response["Shards"])
    while response.get("NextToken"):
        response = client.list_shards(NextToken=response["NextToken"])
        shards.extend(response["Shards"])
    return shards


def root_of(shard_id: str, by_id: dict[str, dict]) -> str:
    """The oldest ancestor of ``shard_id`` still present in the listing."""
    seen = set()
    while True:
        parent = by_id[shard_id].get("ParentShardId")
        if parent is None or parent not in by_id or parent in seen:
            return shard_id
        seen.add(shard_id)
        shard_id = parent


def lineage_roots(shards: list[dict]) -> list[str]:
    """Root shard ids, sorted: one source partition each."""
    by_id = {s["ShardId"]: s for s in shards}
    return sorted({root_of(sid, by_id) for sid in by_id})


def lineage(root: str, shards: list[dict]) -> dict[str, dict]:
    """The shards of ``root``'s lineage, by id."""
    by_id = {s["ShardId"]: s for s in shards}
    return {sid: s for sid, s in by_id.items() if root_of(sid, by_id) == root}


def is_closed(shard: dict) -> bool:
    return "EndingSequenceNumber" in shard.get("SequenceNumberRange", {})
