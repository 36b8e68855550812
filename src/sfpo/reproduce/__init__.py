"""The reproduction harness, the project's fourth face: the grids (which runs, in which order, how each method's
learning rate is chosen: ``grid``), running them resumably one process per run (``harness``), and the reports
built from the run records alone (``report``: SFPO vs GRPO vs GRPO with K+1 passes; ``beyond``: issue 24's
reposition variants). The command is ``sfpo reproduce`` (``--analyse-only`` rebuilds a report)."""
