"""K-MERL Edge firmware bridge (in progress)."""
