"""Market data: ingress (price files, ENTSO-E, the synthetic generator), the probabilistic forecaster and
the scenario builder (copula samples reduced to a few weighted price paths)."""
