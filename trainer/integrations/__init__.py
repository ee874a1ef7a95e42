"""Plugins that bring searchgym's LLDS loss and search tools into other RL trainers (verl, TRL); each
module imports its framework."""
