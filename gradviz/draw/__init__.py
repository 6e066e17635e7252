"""Drawing: what to show of a `Graph` (views, folding, rolled blocks) and its DOT/SVG/PNG/JSON."""
