"""The web report server: runs, live progress, plots and yields over HTTP (aiohttp)."""
