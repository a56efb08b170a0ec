"""hsagent-acld: switch ACLs over an authenticated REST API (acl_server's API), committed atomically.

A service beside the agent: nothing in hsagent imports it, and it imports nothing heavy from the
agent. aiohttp (through `hsagent.service.web` and `app`) is imported only once the settings are
good, so `--help` and a bad configuration answer without it.
"""
