"""Configuration: app settings (routes, gateway-wide settings) → validated tables, and
`local.settings.json` for local runs."""
