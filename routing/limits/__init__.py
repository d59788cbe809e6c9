"""Limits (DESIGN §10): admission against a consumer's rate limits and quota, the reserve-then-
reconcile accounting, OpenAI's rate-limit headers, and what GET /v1/gateway/usage answers."""
