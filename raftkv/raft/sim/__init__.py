"""A deterministic, seeded simulator of a cluster of RaftCores.

``run_simulation(seed)`` is a pure function of its seed: network faults,
crashes, client operations and scheduling all draw from one seeded RNG.
"""

from raftkv.raft.sim.simulation import SimConfig, SimResult, run_simulation

__all__ = ["SimConfig", "SimResult", "run_simulation"]
