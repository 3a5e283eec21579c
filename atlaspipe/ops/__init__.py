"""Running it in production: Prometheus metrics, CPU sampling and its reports, worker probe files."""
