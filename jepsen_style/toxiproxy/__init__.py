"""A Toxiproxy-compatible fault-injection proxy, and a launcher that prefers
the real ``toxiproxy-server`` when it is installed.

See docs/toxiproxy.md.
"""

from .launcher import ToxiproxyProcess, start_toxiproxy

__all__ = ["ToxiproxyProcess", "start_toxiproxy"]
