"""Operating the gateway: the routes file and `routes` command, and the demo."""
