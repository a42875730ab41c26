"""Benchmarks: gmemfs side by side with the kernel doing the same work and a do-nothing pyfuse3 filesystem."""
