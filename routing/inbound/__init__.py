"""Who is calling and what they sent: inbound keys, body reading and validation."""
