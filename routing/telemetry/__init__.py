"""What leaves the gateway besides answers: logs (with every configured secret redacted)."""
