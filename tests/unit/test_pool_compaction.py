"""Dropping caches and compacting memory touch the whole machine: only when the user asks."""

import gmemfs.base.hugepages as hugepages


def short_grant_with(monkeypatch, compact: bool) -> list[str]:
    calls = []
    monkeypatch.setattr(hugepages, "set_pool_pages", lambda page_size, pages: calls.append("grow") or 0)
    monkeypatch.setattr(hugepages, "make_contiguous_memory", lambda: calls.append("compact"))
    size = min(hugepages.huge_page_sizes())
    hugepages.resize_pool(size, hugepages.pool_counters(size).total + 1, compact=compact)
    return calls


def test_a_short_grant_is_only_reported(monkeypatch):
    assert short_grant_with(monkeypatch, compact=False) == ["grow"]


def test_with_compact_a_short_grant_is_retried_after_compaction(monkeypatch):
    assert short_grant_with(monkeypatch, compact=True) == ["grow", "compact", "grow"]
