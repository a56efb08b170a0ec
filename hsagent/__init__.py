"""hsagent: a Host sFlow agent (sFlow version 5)."""

__version__ = "0.1.0"
