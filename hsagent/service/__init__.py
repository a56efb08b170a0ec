"""What hsagent's HTTP services (hsagent-acld, hsagent-controller) share: `options` (one option
table for the command line and the configuration file, the converters, logging set-up) and
`web` (bearer tokens, TLS, listening, stopping on a signal; it imports aiohttp)."""
