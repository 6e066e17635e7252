"""Drawing: what to show of a `Graph` (view state, planning within a budget, folding, rolled
blocks) and the one path that writes it as DOT (`to_dot`), then SVG/PNG/JSON (`export`)."""
