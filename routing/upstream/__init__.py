"""Where a request goes: backend rules as data, normalisation, credentials, the deployment
pool, forwarding with failover, and the stream relay."""
