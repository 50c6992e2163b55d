"""Command-line interface (thin layer over mixscale.api)."""
