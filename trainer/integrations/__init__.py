"""searchgym's trainer pieces inside other RL frameworks (each module imports its framework)."""
