"""The traced graph: `trace` and `capture` turn a PyTorch program into a frozen `Graph`."""
