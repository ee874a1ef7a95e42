"""The death-spiral experiment (issue 10): plain GRPO against GRPO+LLDS on the same seeds, a collapse criterion
declared up front, a summary per arm and seed, and the figure. Entry point: `search-trainer death-spiral`."""
