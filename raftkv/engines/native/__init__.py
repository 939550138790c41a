"""The native engine: our own Raft core driven on the node's asyncio loop.
See docs/native-engine.md."""

from raftkv.engines.native.engine import NativeEngine, NativeOptions

__all__ = ["NativeEngine", "NativeOptions"]
