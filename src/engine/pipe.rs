//! The pipes between a dump program and Coffer.

use std::os::fd::AsFd;

/// The size asked for a dump program's stdout pipe: Linux's default is 64 KiB, and each
/// read of a full pipe wakes Coffer's reader, its inspector and its writer; 1 MiB (the
/// unprivileged maximum) makes those wake-ups sixteen times fewer.
const WIDE_PIPE: usize = 1 << 20;

/// Widens the pipe behind `fd` when the kernel allows it. A pipe that stays narrow only
/// costs speed, so failures are ignored.
pub fn widen(fd: &impl AsFd) {
    let _ = rustix::pipe::fcntl_setpipe_size(fd, WIDE_PIPE);
}
