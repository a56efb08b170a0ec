"""hsagent-controller: finds elephant flows in sFlow and marks them through the switches' ACL
services (hsagent-acld). `python3 -m hsagent.controller` runs it."""
