"""Pruning: choose the most redundant block of decoder layers from calibration data and remove it."""
