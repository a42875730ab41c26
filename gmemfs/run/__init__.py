"""`gmemfs run`: an unchanged program gets gmemfs memory from KVM's own ioctls. The seccomp
filter and its exec trampoline, the supervisor that answers trapped ioctls, what it reads of
and injects into the program's threads, the VMs' memslots, the private mount.

Owns: the program's VMs and the files it created, for one run. May import: gmemfs.base,
gmemfs.kernel, gmemfs.trace, gmemfs.client, gmemfs.daemon (to start a private daemon and to use its
checks), never gmemfs.commands.
"""
