"""How many lines a source asks for next: large while behind, small once caught up.

Per-chunk work (the columnar parse, the user rules on arrays) pays for its
fixed cost only over large chunks, while a large chunk taken when the source
is caught up would only make the flow wait for it to fill. So every source
keeps one :class:`ChunkSize` per read position and tells it, after each
read, whether more data was ready than the chunk held: the size doubles while
that holds (up to ``source.max_batch_size``) and falls back to
``source.batch_size`` at the first read that finds the source caught up.

A source never waits for a chunk to fill (every read takes what is ready), so
at low rates chunks stay as small as the traffic and an alert leaves as soon
as its chunk is processed. The size is not part of any snapshot: chunks stay
the unit of resume whatever their size, and a resumed source starts small.
"""

from __future__ import annotations


class ChunkSize:
    """The next chunk's size for one read position (a file, a partition, a shard).

    :arg base: ``source.batch_size``, the size when caught up.
    :arg most: ``source.max_batch_size``, the size after enough reads behind.
    :raises ValueError: ``most < base`` or ``base < 1``.
    """

    __slots__ = ("_base", "_most", "size")

    def __init__(self, base: int, most: int) -> None:
        if base < 1 or most < base:
            raise ValueError(f"chunk sizes need 1 <= batch_size <= max_batch_size, got {base} and {most}")
        self._base = base
        self._most = most
        #: lines (records) to ask for in the next read.
        self.size = base

    def update(self, behind: bool) -> int:
        """After a read: double the size while ``behind``, else back to the base; returns the new size."""
        self.size = min(self.size * 2, self._most) if behind else self._base
        return self.size
