"""Fault injection: which faults exist (`kinds`), when they happen
(`schedule`), which links a partition cuts (`partitions`), the per-link
proxies (`link_proxies`) and the executor that applies them (`executor`)."""
