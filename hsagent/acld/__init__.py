"""hsagent-acld: switch ACLs over an authenticated REST API (acl_server's API), committed atomically.

A service beside the agent: nothing in hsagent imports it, and it imports nothing heavy from the
agent. aiohttp is imported here only.
"""
