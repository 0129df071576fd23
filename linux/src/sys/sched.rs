//! Scheduling policy of the calling thread.
//!
//! Pipeline role threads run as `SCHED_BATCH`: the kernel then does not preempt the waker when it
//! wakes another role thread, so a producer finishes its whole batch before the consumer runs.
//! On a box where the roles share a core, that turns one context switch per message into one per
//! batch. No privilege is needed to lower a thread to `SCHED_BATCH`.

use std::io;

/// Switches the calling thread to `SCHED_BATCH` (same nice value).
pub fn set_batch() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // `param` is a valid sched_param; pid 0 is the calling thread.
    syscall!(sched_setscheduler(0, libc::SCHED_BATCH, &param)).map(drop)
}
