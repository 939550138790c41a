"""Watches and blocking reads: the committed history, in order, pushed to
clients (see docs/api.md#watch and raftkv/watch/hub.py)."""

from raftkv.watch.hub import ChangeWaiter, QueueLimits, WatchHub, Watcher

__all__ = ["ChangeWaiter", "QueueLimits", "WatchHub", "Watcher"]
