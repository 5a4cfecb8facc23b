//! Small host queries and the privilege checks `shunt run` makes before it
//! touches the kernel, so failures read as advice rather than errno.

pub mod bpf_link;
pub mod neigh;
pub mod nonblock;

use std::ffi::CString;

/// Interface index, or None when the interface does not exist.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

/// Every (interface, address) the host has in this namespace (getifaddrs);
/// empty when the call fails.
pub fn interface_addresses() -> Vec<(String, std::net::IpAddr)> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, alive
        // until freeifaddrs; its name is a NUL-terminated string and its
        // address, when non-null, is a sockaddr of the family it names.
        unsafe {
            let ifa = &*cur;
            let addr = ifa.ifa_addr;
            if !addr.is_null() {
                let name = std::ffi::CStr::from_ptr(ifa.ifa_name).to_string_lossy().into_owned();
                match i32::from((*addr).sa_family) {
                    libc::AF_INET => {
                        let a = &*(addr as *const libc::sockaddr_in);
                        out.push((name, std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)).into()));
                    }
                    libc::AF_INET6 => {
                        let a = &*(addr as *const libc::sockaddr_in6);
                        out.push((name, std::net::Ipv6Addr::from(a.sin6_addr.s6_addr).into()));
                    }
                    _ => {}
                }
            }
            cur = ifa.ifa_next;
        }
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

/// setsockopt(2) with a plain C value (`c_int`, `linger`, `timeval`...),
/// passed with its exact size; the kernel checks the option's size.
pub fn setsockopt<T: Copy>(fd: std::os::fd::RawFd, level: i32, name: i32, value: &T) -> std::io::Result<()> {
    // SAFETY: `value` is a live `T` and the length passed is its size, so
    // the kernel reads only memory we lend it; it writes nothing.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

pub fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Number of RX queues the kernel exposes for an interface (1 if unknown).
pub fn rx_queue_count(name: &str) -> u32 {
    let dir = format!("/sys/class/net/{name}/queues");
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().starts_with("rx-")).count()
                as u32
        })
        .unwrap_or(1)
        .max(1)
}

/// The interface's own MAC address, from sysfs.
pub fn mac_address(name: &str) -> Option<[u8; 6]> {
    let s = std::fs::read_to_string(format!("/sys/class/net/{name}/address")).ok()?;
    crate::wire::ethernet::parse_mac(s.trim())
}

/// The interface's L3 MTU, from sysfs.
pub fn mtu(name: &str) -> Option<u16> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/mtu")).ok()?.trim().parse().ok()
}

/// Whether the interface can carry frames: it exists, is up, and has
/// carrier (sysfs `carrier` reads 1; reading it fails while it is down).
pub fn carrier(name: &str) -> bool {
    std::fs::read_to_string(format!("/sys/class/net/{name}/carrier")).is_ok_and(|s| s.trim() == "1")
}

/// Runs the calling thread under SCHED_FIFO at `priority` (1..=99).
pub fn set_realtime(priority: u8) -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: i32::from(priority) };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Pins the calling thread to one CPU core.
pub fn pin_to_core(core: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes inside `set`; `core` is bounded by CPU_SETSIZE below.
    if core >= libc::CPU_SETSIZE as usize {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: `core` < CPU_SETSIZE, checked above.
    unsafe { libc::CPU_SET(core, &mut set) };
    // SAFETY: pid 0 means the calling thread; `set` is a valid cpu_set_t.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_IPC_LOCK: u32 = 14;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Effective capability mask of this process, from /proc/self/status.
/// This thread's permitted set (CapPrm of /proc/thread-self/status).
fn permitted_caps() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/status").ok().and_then(|s| {
        s.lines().find_map(|l| l.strip_prefix("CapPrm:")).and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    })
}

fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Why the process cannot run the dataplane here.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// Capabilities the command needs are missing.
    #[error("{command} needs {missing}: run as root, or grant it: setcap {grant}+ep $(which {binary})")]
    MissingCapabilities { command: &'static str, binary: &'static str, missing: String, grant: &'static str },
    /// RLIMIT_MEMLOCK is too low for UMEM and cannot be raised.
    #[error(
        "cannot raise the locked-memory limit (RLIMIT_MEMLOCK is {kib} KiB); UMEM needs frames_per_worker × \
         frame_size per worker. Run as root, grant CAP_IPC_LOCK, or raise it: `ulimit -l unlimited` / \
         LimitMEMLOCK=infinity"
    )]
    Memlock { kib: u64 },
    /// The kernel predates XDP bpf_link.
    #[error(
        "kernel {release} is too old: Shunt needs Linux 5.9 or newer (XDP bpf_link, AF_XDP need_wakeup)"
    )]
    KernelTooOld { release: String },
}

/// Checks the capabilities and limits `shunt run` needs, naming what is missing.
pub fn check_privileges() -> Result<(), SysError> {
    let caps = effective_caps();
    let has = |c: u32| caps & (1u64 << c) != 0;
    let mut missing = Vec::new();
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN (attach XDP, bind AF_XDP)");
    }
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF (load the XDP program and its maps)");
    }
    if !has(CAP_NET_RAW) {
        missing.push("CAP_NET_RAW (create AF_XDP sockets)");
    }
    if !missing.is_empty() {
        return Err(SysError::MissingCapabilities {
            command: "shunt run",
            binary: "shunt",
            missing: missing.join(", "),
            grant: "cap_net_admin,cap_net_raw,cap_bpf,cap_ipc_lock",
        });
    }
    // UMEM and BPF maps are locked memory; kernels since 5.11 charge BPF to
    // memcg, but UMEM pinning still counts against RLIMIT_MEMLOCK.
    raise_memlock(has(CAP_IPC_LOCK) || has(CAP_SYS_ADMIN))
}

/// Checks what an AF_XDP socket without XDP program needs (`shunt-gen`):
/// CAP_NET_RAW, and locked memory for the UMEM.
pub fn check_socket_privileges() -> Result<(), SysError> {
    let caps = effective_caps();
    let has = |c: u32| caps & (1u64 << c) != 0;
    if !has(CAP_NET_RAW) {
        return Err(SysError::MissingCapabilities {
            command: "shunt-gen",
            binary: "shunt-gen",
            missing: "CAP_NET_RAW (create AF_XDP sockets)".into(),
            grant: "cap_net_raw,cap_ipc_lock",
        });
    }
    raise_memlock(has(CAP_IPC_LOCK) || has(CAP_SYS_ADMIN))
}

fn raise_memlock(privileged: bool) -> Result<(), SysError> {
    let inf = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: `inf` is a valid rlimit for the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &inf) } == 0 {
        return Ok(());
    }
    let mut cur = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `cur` is a valid out-pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut cur) };
    if privileged {
        return Ok(());
    }
    Err(SysError::Memlock { kib: cur.rlim_cur / 1024 })
}

/// Fails with advice when the kernel lacks what Shunt needs.
pub fn check_kernel() -> Result<(), SysError> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']);
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    // bpf_link for XDP (fail-open on exit) arrived in 5.9; need_wakeup in 5.4.
    if (major, minor) < (5, 9) {
        return Err(SysError::KernelTooOld { release: release.trim().to_string() });
    }
    Ok(())
}

pub const CAP_NET_RAW_BIT: u32 = CAP_NET_RAW;
pub const CAP_BPF_BIT: u32 = CAP_BPF;
/// What a re-executed image needs to start again (`shunt restart`); the
/// housekeeping thread keeps these permitted, not effective. CAP_SYS_NICE
/// serves `realtime_priority` where it was granted.
pub const RESTART_CAPS: [u32; 6] =
    [CAP_NET_ADMIN, CAP_NET_RAW, CAP_IPC_LOCK, CAP_SYS_ADMIN, CAP_BPF, CAP_SYS_NICE];
const CAP_SYS_NICE: u32 = 23;

/// As [`drop_capabilities`], but `permitted` (a superset of `keep`) stays
/// permitted, inheritable and in the bounding set, so an `execve` of this
/// thread gets them back (ambient ones included); only `keep` is effective.
pub fn drop_capabilities_keeping(keep: &[u32], permitted: &[u32]) -> std::io::Result<()> {
    set_capabilities(keep, permitted)
}

/// Drops every capability of the calling thread except `keep`: effective,
/// permitted, inheritable and bounding sets, and sets no_new_privs.
/// Capabilities are per thread on Linux, so each long-lived thread calls
/// this once its setup is done.
pub fn drop_capabilities(keep: &[u32]) -> std::io::Result<()> {
    set_capabilities(keep, &[])
}

fn set_capabilities(keep: &[u32], permitted: &[u32]) -> std::io::Result<()> {
    let eff: u64 = keep.iter().fold(0, |m, &c| m | (1u64 << c));
    let mask: u64 = permitted.iter().fold(eff, |m, &c| m | (1u64 << c));
    // Only what this thread has can stay permitted.
    let mask = mask & permitted_caps().unwrap_or(u64::MAX);
    let inheritable = if permitted.is_empty() { 0 } else { mask };
    for cap in 0..64u32 {
        if mask & (1u64 << cap) == 0 {
            // SAFETY: prctl with integer arguments; EINVAL for capabilities
            // this kernel does not know is expected and ignored.
            unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        }
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let header = Header { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let eff = eff & mask;
    let data = [
        Data { effective: eff as u32, permitted: mask as u32, inheritable: inheritable as u32 },
        Data {
            effective: (eff >> 32) as u32,
            permitted: (mask >> 32) as u32,
            inheritable: (inheritable >> 32) as u32,
        },
    ];
    // SAFETY: capset(2) with a v3 header and two data structs, as the ABI requires.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    Ok(())
}

/// CLOCK_MONOTONIC in nanoseconds from the vDSO (no syscall): the clock
/// `bpf_ktime_get_ns()` reads, so BPF programs can compare against it.
#[inline]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC is served by the vDSO.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The (device, inode) of an open file descriptor, as fstat(2) gives them.
pub fn fd_identity(fd: i32) -> Option<(u64, u64)> {
    // SAFETY: libc::stat is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into `st`, which we own; a bad fd is an error return.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    Some((st.st_dev, st.st_ino))
}
