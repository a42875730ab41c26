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
- A reader's buffer is bounded (TraceChannel.capacity lines, channel.BYTES_KEPT bytes: any
  user of the mount picks names, and so the length of lines). A reader that falls behind
  loses the oldest events, and its next read starts with one "lost" event (detail["lost"]
  counts them, its time that of the last one lost), as trace_pipe overwrites.
- Tracing off costs one attribute test per event site: callers write
  `if channel.readers: channel.emit(TraceEvent(...))`, so nothing is built or encoded while
  nobody reads. emit() runs on the daemon's trio loop; a worker thread hands it over with
  trio.from_thread.run_sync.
- Several files and VMs share one stream: a daemon event names its file (TraceEvent.file,
  "inode:path") and its caller (pid, tid: FUSE gives the calling thread; page faults,
  writeback and evictions carry none); a supervisor event names the program's fd in its args
  (gmem=7+0x0, fd=7) and the calling thread.
- Readers wait with poll(2), then read with O_NONBLOCK: pyfuse3 gives a READ handler no
  interrupt, so a read the daemon holds would keep even a killed reader in the kernel until
  the next event.
- `gmemfs run` opens the trace file before PROGRAM starts, and merges its own events with
  the daemon's (TraceMerger): each waits `hold` seconds (0.1) before it is printed, so that a
  late event of the other process still sorts in by time (ties keep their arrival order).
  With --mount, the mount serves others too: only daemon events about the inodes the run
  created, and about the stream itself (lost, daemon-ended), are printed.
- The end: once the program is gone, the run lets go of its copies of the program's files,
  then stops its private daemon and reads the stream to its end. A stopping daemon makes the
  evictions of the files still holding memory ("at=session end") its last events, closes
  the stream and waits (a second at most) until every reader has read its end of file.
- A daemon that dies ends its stream (EOF, or ENOTCONN from a dead mount): the reader adds
  one "daemon-ended" event, and what came before it is still printed.
"""
