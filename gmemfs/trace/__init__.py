"""Tracing: one line per guest_memfd event, from the `gmemfs run` supervisor and the daemon.

Owns: the event (events.py), its words (decode.py), the daemon's stream (channel.py) and the
merge of streams (merge.py); no state that outlives its owner. May import: gmemfs.base,
gmemfs.kernel; the daemon, run, commands and cli import it.

The event stream:
- An event is one JSON object on one line (TraceEvent.to_json); readers ignore keys they do
  not know. Its time is time.monotonic() (CLOCK_MONOTONIC, one clock for every process on
  the machine). An ioctl's event is made when the call returns and carries its duration, as
  strace's line does, so the daemon's work for it sorts before it.
- The daemon streams its events through a hidden file on its mount, read like the kernel's
  trace_pipe: each open is a reader (TraceChannel.subscribe) that gets the events from then
  on, in order, whole lines only. The file is root's alone (mode 0400, uid 0): the events
  name every process's files, ranges and errors on the mount.
- A reader's buffer is bounded (TraceChannel.capacity lines). A reader that falls behind
  loses the oldest events, and its next read starts with one "lost" event (detail["lost"]
  counts them, its time that of the last one lost), as trace_pipe overwrites.
- Tracing off costs one attribute test per event site: callers write
  `if channel.readers: channel.emit(TraceEvent(...))`, so nothing is built or encoded while
  nobody reads. emit() runs on the daemon's trio loop; a worker thread hands it over with
  trio.from_thread.run_sync.
- Several files and VMs share one stream: an event names its file (TraceEvent.file: the
  inode number, or an fd in the program) and the caller (pid, tid).
- `gmemfs run` merges its own events with the daemon's (TraceMerger): each waits `hold`
  seconds (0.1) before it is printed, so that a late event of the other process still sorts
  in by time (ties keep their arrival order); at the end everything left is printed.
- A daemon that dies ends its stream (EOF, or ENOTCONN from a dead mount): the merger's
  owner adds one "daemon-ended" event, and what came before it is still printed.
"""
