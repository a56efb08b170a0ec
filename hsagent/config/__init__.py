"""Configuration sources that produce `Settings`: the hsflowd.conf-style file and DNS-SD."""
