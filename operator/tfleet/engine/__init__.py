"""The decisions: plans, rollout and status, as pure functions (no clock, no I/O)."""
