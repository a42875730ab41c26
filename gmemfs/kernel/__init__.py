"""The kernel's side of the contract: its numbers (flags, ioctls, the ABI profile of each series
version), every guest_memfd check in the kernel's order with its errno, and the inspection
attributes through which a mount shows the kernel's state.

Owns: the rules, as data and pure functions (no I/O, no state). May import: gmemfs.base.
"""
