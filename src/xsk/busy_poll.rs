//! Preferred busy polling (SO_PREFER_BUSY_POLL, Linux 5.11+), as DPDK's
//! af_xdp PMD uses it: an empty RX poll calls recvfrom(), and the kernel
//! runs the RX queue's NAPI in the worker's context with up to `budget`
//! packets, instead of waiting for softirq. It works only once the socket
//! knows its queue's NAPI, which the kernel records from the first packet
//! it receives. Drivers that register no NAPI id with their XDP queue never
//! give one (veth, checked on Linux 6.18, GRO on or off), and the worker then
//! stops making the calls.

/// Received batches to wait for a NAPI id before giving busy polling up.
const PROBE_BATCHES: u8 = 8;
/// SO_BUSY_POLL: must be non-zero for busy polling to engage; a
/// non-blocking recvfrom() polls once whatever its value (DPDK uses 20).
const BUSY_POLL_USECS: libc::c_int = 20;
const SO_BUSY_POLL: libc::c_int = 46;
const SO_INCOMING_NAPI_ID: libc::c_int = 56;
const SO_PREFER_BUSY_POLL: libc::c_int = 69;
const SO_BUSY_POLL_BUDGET: libc::c_int = 70;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusyPoll {
    /// Not configured, refused by the kernel, or no NAPI to poll.
    Off,
    /// Configured; waiting for the first packets to tell the socket its NAPI.
    Probing { batches_left: u8 },
    /// Empty RX polls run this NAPI.
    On { napi_id: u32 },
}

impl BusyPoll {
    /// Configures the socket (`budget` 0 = off). A kernel that refuses the
    /// options (no CONFIG_NET_RX_BUSY_POLL, no CAP_NET_ADMIN) leaves it off
    /// with a warning: the worker then relies on wakeups alone.
    pub fn request(fd: i32, budget: u16, interface: &str) -> BusyPoll {
        if budget == 0 {
            return BusyPoll::Off;
        }
        let r = set(fd, SO_PREFER_BUSY_POLL, 1)
            .and_then(|()| set(fd, SO_BUSY_POLL, BUSY_POLL_USECS))
            .and_then(|()| set(fd, SO_BUSY_POLL_BUDGET, libc::c_int::from(budget)));
        match r {
            Ok(()) => BusyPoll::Probing { batches_left: PROBE_BATCHES },
            Err(e) => {
                tracing::warn!(interface, "preferred busy polling refused ({e}); using wakeups only");
                BusyPoll::Off
            }
        }
    }

    /// Called after a non-empty RX batch while probing (one getsockopt
    /// per batch, for at most PROBE_BATCHES batches).
    pub fn learn_napi(&mut self, fd: i32, interface: &str, queue: u32) {
        let BusyPoll::Probing { batches_left } = *self else { return };
        *self = match napi_id(fd) {
            Some(napi_id) => {
                tracing::info!(interface, queue, napi_id, "busy polling the queue's NAPI");
                BusyPoll::On { napi_id }
            }
            None if batches_left <= 1 => {
                tracing::info!(interface, queue, "busy polling off: the driver gave the socket no NAPI id");
                BusyPoll::Off
            }
            None => BusyPoll::Probing { batches_left: batches_left - 1 },
        };
    }

    /// On an empty RX poll: runs the NAPI once if busy polling is on.
    #[inline]
    pub fn poll(&self, fd: i32) -> bool {
        if !matches!(self, BusyPoll::On { .. }) {
            return false;
        }
        // SAFETY: no buffer (null, length 0) and no address: the kernel writes nothing.
        unsafe {
            libc::recvfrom(
                fd,
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        true
    }
}

fn set(fd: i32, name: libc::c_int, value: libc::c_int) -> std::io::Result<()> {
    crate::sys::setsockopt(fd, libc::SOL_SOCKET, name, &value)
}

/// The NAPI the kernel associated with the socket, if any yet.
pub fn napi_id(fd: i32) -> Option<u32> {
    let mut id: u32 = 0;
    let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
    // SAFETY: `id`/`len` are valid out-pointers sized for an unsigned int.
    let rc = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, SO_INCOMING_NAPI_ID, (&mut id as *mut u32).cast(), &mut len)
    };
    (rc == 0 && id != 0).then_some(id)
}
