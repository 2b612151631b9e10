"""Two exact indexes whose every call costs a bounded amount of work, for the environment.

Theory of operation
-------------------
The environment (``workstate._environment``) used to keep its queues in heaps with lazy
deletion: an entry went stale when its item moved on, and was skipped when it reached the top.
That is cheap on average and expensive at the wrong moment: the first call after 500,000 items
left a queue popped 500,000 stale entries, and the heaps were rebuilt whenever stale entries
outnumbered live ones.  A server answers every request under one lock, so one such call stalls
every client.  The two structures here never hold a stale entry, so no call ever cleans up
after earlier ones and nothing is ever rebuilt:

* :class:`SeqSet` — a set of creation sequence numbers (small non-negative ints) as a bitmap
  of 64-bit words with a summary level above it (a bit per non-empty word), and so on up to a
  single word.  ``add``, ``discard``, ``min`` and ``next_from`` touch one word per level:
  four levels hold 16 million items.  Memory is one bit per sequence number ever used, plus
  the list slots of the words.
* :class:`SortedKeys` — tuples ``(time, seq, ...)`` in sorted order, in blocks of at most
  ``2 * LOAD`` keys (the layout of ``sortedcontainers.SortedList``, reduced to what is needed
  here).  Each block knows its largest key and the smallest ``seq`` it holds, so "how many keys
  lie below a bound" and "the smallest ``seq`` among them" look at the whole blocks below the
  bound through two short lists and scan one partial block: O(n / LOAD + LOAD) work, done by
  C loops (``sum``, ``min``, ``bisect``).  ``add`` and ``remove`` find their block by bisection
  and move at most one block's worth of pointers; a block that grows past ``2 * LOAD`` splits,
  one that shrinks below ``LOAD / 4`` merges with a neighbour, so the number of blocks follows
  the number of keys.

* :class:`ShardedDict` — a mapping split over 256 dicts by the key's hash.  A CPython dict
  grows, and clears the slots its deletions left, by rebuilding itself in one insertion: at a
  million keys that one insertion takes 40-100 ms.  Split 256 ways, the rebuild that lands on
  one insertion moves a 256th of the keys.

Both are exact: a key is in the structure exactly while its item is in the class the structure
stands for, and the owner adds and removes it at each move.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

_SECOND = operator.itemgetter(1)
_K = TypeVar("_K")
_V = TypeVar("_V")
_SHARDS = 256


class ShardedDict(Generic[_K, _V]):
    """A mapping over 256 dicts, so that no single insertion rebuilds all of it.

    >>> d: ShardedDict[str, int] = ShardedDict()
    >>> d["a"] = 1; d["b"] = 2; del d["a"]; d["b"] = 3
    >>> len(d), "a" in d, d.get("b"), d["b"], sorted(d), list(d.values())
    (1, False, 3, 3, ['b'], [3])
    >>> d["c"] = 4; d.pop("c"), d.pop("c"), len(d), list(d.items())
    (4, None, 1, [('b', 3)])
    >>> d.clear(); len(d), list(d)
    (0, [])
    """

    __slots__ = ("_len", "shards")

    def __init__(self) -> None:
        self.shards: list[dict[_K, _V]] = [{} for _ in range(_SHARDS)]
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __contains__(self, key: _K) -> bool:
        return key in self.shards[hash(key) & 255]

    def __getitem__(self, key: _K) -> _V:
        return self.shards[hash(key) & 255][key]

    def get(self, key: _K) -> _V | None:
        """The value of ``key``, or None."""
        return self.shards[hash(key) & 255].get(key)

    def __setitem__(self, key: _K, value: _V) -> None:
        shard = self.shards[hash(key) & 255]
        if key not in shard:
            self._len += 1
        shard[key] = value

    def __delitem__(self, key: _K) -> None:
        del self.shards[hash(key) & 255][key]
        self._len -= 1

    def __iter__(self) -> Iterator[_K]:
        for shard in self.shards:
            yield from shard

    def values(self) -> Iterator[_V]:
        """Every value, shard by shard (in no useful order)."""
        for shard in self.shards:
            yield from shard.values()

    def items(self) -> Iterator[tuple[_K, _V]]:
        """Every key and value, shard by shard (in no useful order)."""
        for shard in self.shards:
            yield from shard.items()

    def pop(self, key: _K) -> _V | None:
        """Remove ``key``; its value, or None if it was not there."""
        shard = self.shards[hash(key) & 255]
        if key not in shard:
            return None
        self._len -= 1
        return shard.pop(key)

    def clear(self) -> None:
        """Remove every key."""
        for shard in self.shards:
            shard.clear()
        self._len = 0


class SeqSet:
    """A set of non-negative ints with the smallest member, and the next one from a point.

    >>> s = SeqSet()
    >>> for n in (70, 5, 4096):
    ...     s.add(n)
    >>> s.min(), s.next_from(6), s.next_from(71), s.next_from(4097), len(s)
    (5, 70, 4096, None, 3)
    >>> s.discard(5); s.min(), list(s.iter_from(0))
    (70, [70, 4096])
    """

    __slots__ = ("_len", "_levels")

    def __init__(self) -> None:
        # _levels[0] holds a bit per member; _levels[k + 1] a bit per non-zero word of
        # _levels[k].  The top level is one word (a new level is added when it outgrows it).
        self._levels: list[list[int]] = [[0]]
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __contains__(self, n: int) -> bool:
        words = self._levels[0]
        i = n >> 6
        return i < len(words) and bool(words[i] >> (n & 63) & 1)

    def add(self, n: int) -> None:
        """Add ``n`` (no effect if present)."""
        levels = self._levels
        if n in self:
            return
        self._len += 1
        for words in levels:
            i = n >> 6
            if i >= len(words):
                words.extend([0] * (i + 1 - len(words)))
            word = words[i]
            words[i] = word | 1 << (n & 63)
            if word:
                break  # the word was not empty: the levels above know it already
            n = i
        top = levels[-1]
        while len(top) > 1:
            # The top outgrew one word: summarise it in a new level.  This happens at 64,
            # 4096, 262,144, ... members' worth of sequence numbers, and costs len(top) / 64.
            above = [0] * ((len(top) + 63) >> 6)
            for i, word in enumerate(top):
                if word:
                    above[i >> 6] |= 1 << (i & 63)
            levels.append(above)
            top = above

    def discard(self, n: int) -> None:
        """Remove ``n`` (no effect if absent)."""
        levels = self._levels
        words = levels[0]
        i = n >> 6
        if i >= len(words) or not words[i] >> (n & 63) & 1:
            return
        self._len -= 1
        for words in levels:
            i = n >> 6
            word = words[i] & ~(1 << (n & 63))
            words[i] = word
            if word:
                return  # the word still has members: the levels above stay as they are
            n = i

    def min(self) -> int | None:
        """The smallest member, or None when empty."""
        levels = self._levels
        if not levels[-1][0]:
            return None
        i = 0
        for k in range(len(levels) - 1, -1, -1):
            word = levels[k][i]
            i = (i << 6) | ((word & -word).bit_length() - 1)
        return i

    def next_from(self, n: int) -> int | None:
        """The smallest member at or after ``n``, or None."""
        levels = self._levels
        depth = len(levels)
        k = 0
        while k < depth:
            words = levels[k]
            i = n >> 6
            if i >= len(words):
                return None
            word = words[i] >> (n & 63) << (n & 63)  # the bits at or after n
            if word:
                n = (i << 6) | ((word & -word).bit_length() - 1)
                while k:  # down again, taking the lowest bit of each word
                    k -= 1
                    word = levels[k][n]
                    n = (n << 6) | ((word & -word).bit_length() - 1)
                return n
            n = i + 1  # nothing left in this word: look from the next one, a level up
            k += 1
        return None

    def iter_from(self, n: int) -> Iterator[int]:
        """The members at or after ``n``, in order (do not change the set while iterating)."""
        words = self._levels[0]
        found = self.next_from(n)
        while found is not None:
            i = found >> 6
            word = words[i] >> (found & 63) << (found & 63)
            while word:  # the rest of this word without climbing the levels
                low = word & -word
                yield (i << 6) | (low.bit_length() - 1)
                word ^= low
            found = self.next_from((i + 1) << 6)


class SortedKeys:
    """Tuples ``(time, seq, ...)`` in sorted order, with counts and the smallest ``seq`` below a
    bound (see the module's theory of operation).

    >>> keys = SortedKeys()
    >>> for key in [(3, 0), (1, 7), (2, 4)]:
    ...     keys.add(key)
    >>> keys.first(), keys.count_below((3, -1)), keys.min_seq_below((3, -1)), len(keys)
    ((1, 7), 2, 4, 3)
    >>> keys.first_from((2, -1)), keys.first_from((4, -1))
    ((2, 4), None)
    >>> keys.remove((2, 4)); keys.min_seq_below((3, -1))
    7
    """

    __slots__ = ("_blocks", "_len", "_maxes", "_mins")

    LOAD = 128
    """Half the largest block: the partial scans stay short, and the lists of blocks too."""

    def __init__(self) -> None:
        self._blocks: list[list[Any]] = []
        self._maxes: list[Any] = []  # the last (largest) key of each block
        self._mins: list[int] = []  # the smallest seq of each block
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def first(self) -> Any:
        """The smallest key, or None when empty."""
        return self._blocks[0][0] if self._blocks else None

    def first_from(self, bound: Any) -> Any:
        """The smallest key at or after ``bound``, or None."""
        j = bisect.bisect_left(self._maxes, bound)
        if j == len(self._blocks):
            return None
        block = self._blocks[j]
        return block[bisect.bisect_left(block, bound)]

    def add(self, key: Any) -> None:
        """Insert ``key`` (keys are distinct: the seq inside them tells items apart)."""
        blocks, maxes, mins = self._blocks, self._maxes, self._mins
        self._len += 1
        if not blocks:
            blocks.append([key])
            maxes.append(key)
            mins.append(key[1])
            return
        j = bisect.bisect_left(maxes, key)
        if j == len(maxes):  # past every key: the usual case for a new deadline or delivery
            j -= 1
            block = blocks[j]
            block.append(key)
            maxes[j] = key
        else:
            block = blocks[j]
            bisect.insort(block, key)
        if key[1] < mins[j]:
            mins[j] = key[1]
        if len(block) > 2 * self.LOAD:
            self._split(j)

    def remove(self, key: Any) -> None:
        """Remove ``key``, which must be present."""
        blocks, maxes, mins = self._blocks, self._maxes, self._mins
        j = bisect.bisect_left(maxes, key)
        block = blocks[j]
        i = bisect.bisect_left(block, key)
        if block[i] != key:  # (the owner's bookkeeping is wrong: fail loudly, change nothing)
            raise AssertionError(f"{key!r} is not in the index")
        del block[i]
        self._len -= 1
        if not block:
            del blocks[j], maxes[j], mins[j]
            return
        if i == len(block):
            maxes[j] = block[-1]
        if key[1] == mins[j]:
            mins[j] = min(map(_SECOND, block))
        if len(block) < self.LOAD // 4 and len(blocks) > 1:
            k = j if j + 1 < len(blocks) else j - 1
            blocks[k].extend(blocks[k + 1])
            maxes[k] = maxes[k + 1]
            mins[k] = min(mins[k], mins[k + 1])
            del blocks[k + 1], maxes[k + 1], mins[k + 1]
            if len(blocks[k]) > 2 * self.LOAD:
                self._split(k)

    def _split(self, j: int) -> None:
        block = self._blocks[j]
        half = block[self.LOAD :]
        del block[self.LOAD :]
        self._blocks.insert(j + 1, half)
        self._maxes[j] = block[-1]
        self._maxes.insert(j + 1, half[-1])
        self._mins[j] = min(map(_SECOND, block))
        self._mins.insert(j + 1, min(map(_SECOND, half)))

    def count_below(self, bound: Any) -> int:
        """How many keys are smaller than ``bound``."""
        blocks = self._blocks
        j = bisect.bisect_left(self._maxes, bound)
        if j == len(blocks):
            return self._len
        return sum(map(len, blocks[:j])) + bisect.bisect_left(blocks[j], bound)

    def min_seq_below(self, bound: Any) -> int | None:
        """The smallest ``seq`` among the keys smaller than ``bound``, or None if none is."""
        blocks = self._blocks
        j = bisect.bisect_left(self._maxes, bound)
        best = min(self._mins[:j]) if j else None
        if j < len(blocks):
            block = blocks[j]
            i = bisect.bisect_left(block, bound)
            if i:
                low: int = min(map(_SECOND, block[:i]))
                if best is None or low < best:
                    best = low
        return best
