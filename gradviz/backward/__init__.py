"""Backward: the engine-order stepper, NumPy rules per op, and whole-network NumPy backprop."""
