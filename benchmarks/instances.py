"""The benchmark instance shared by the benchmark scripts: ``random_fleet(n, seed=42)`` against
``synthetic_market(20, 24, seed=7)`` (K = 20 scenarios, T = 24 hourly steps), with random quadratic costs
(``"qp"``) or with them set to zero (``"lp"``, the case the HiGHS anchors solve)."""

from __future__ import annotations

T, K = 24, 20  #: hourly steps, price scenarios


def fleet_and_market(n: int, instance: str = "qp"):
    """The fleet of ``n`` batteries and the market of the ``instance`` (``"qp"`` or ``"lp"``)."""
    import jax.numpy as jnp

    import jaxvpp

    fleet, market = jaxvpp.random_fleet(n, seed=42), jaxvpp.synthetic_market(K, T, seed=7)
    if instance == "lp":
        fleet = fleet._replace(quadratic_cost_eur_per_mw2h=jnp.zeros(n))
    elif instance != "qp":
        raise ValueError(f"instance must be 'qp' or 'lp', got {instance!r}")
    return fleet, market
