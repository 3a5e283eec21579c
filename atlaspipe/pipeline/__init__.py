"""How a run is carried out: planning, the stage functions, and the lifecycle that owns a run's state."""
