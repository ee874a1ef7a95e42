"""GRPO + LLDS trainer (arXiv 2512.04220). Arrives with its own issue; nothing here yet."""
