"""validator app: rejects tasks that do not meet the minimum content rules."""
