//! XDP bpf_links through bpf(2) directly: Shunt owns the link's file
//! descriptor, so it can keep the link across `execve` (a planned restart)
//! and point it at the next image's program with `BPF_LINK_UPDATE`, which
//! swaps the program atomically, without a moment of no program.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_LINK_UPDATE: libc::c_long = 29;
/// `enum bpf_attach_type`: BPF_XDP.
const BPF_XDP: u32 = 37;
/// `enum bpf_link_type`: BPF_LINK_TYPE_XDP.
const BPF_LINK_TYPE_XDP: u32 = 6;
/// `XDP_FLAGS_SKB_MODE`, `XDP_FLAGS_DRV_MODE` (linux/if_link.h).
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// `union bpf_attr` is larger; the kernel accepts a shorter one whose
/// unused tail is zero.
type Attr = [u32; 16];

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a zeroed buffer laid out as the command's member of
    // `union bpf_attr` (u32 fields), and its size is passed along; the
    // kernel writes back within that size only.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), std::mem::size_of::<Attr>()) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Attaches `prog` to interface `ifindex` in the mode `flags` names; the
/// program stays attached as long as the returned descriptor is open.
pub fn create_xdp(prog: BorrowedFd<'_>, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    let mut attr: Attr = [0; 16];
    attr[0] = prog.as_raw_fd() as u32;
    attr[1] = ifindex;
    attr[2] = BPF_XDP;
    attr[3] = flags;
    let fd = bpf(BPF_LINK_CREATE, &mut attr)?;
    // SAFETY: BPF_LINK_CREATE returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Replaces the program behind `link` with `prog` in one step.
pub fn update(link: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr: Attr = [0; 16];
    attr[0] = link.as_raw_fd() as u32;
    attr[1] = prog.as_raw_fd() as u32;
    bpf(BPF_LINK_UPDATE, &mut attr).map(|_| ())
}

/// The interface an XDP link is attached to; an error when `fd` is not an
/// XDP link.
pub fn xdp_ifindex(fd: BorrowedFd<'_>) -> io::Result<u32> {
    // struct bpf_link_info: type, id, prog_id, then (8-aligned) the union
    // whose xdp member is the ifindex.
    let mut info = [0u32; 16];
    let mut attr: Attr = [0; 16];
    attr[0] = fd.as_raw_fd() as u32;
    attr[1] = std::mem::size_of_val(&info) as u32;
    let ptr = info.as_mut_ptr() as u64;
    attr[2] = ptr as u32;
    attr[3] = (ptr >> 32) as u32;
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    if info[0] != BPF_LINK_TYPE_XDP {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not an XDP bpf_link"));
    }
    Ok(info[4])
}

/// Lets `fd` stay open across `execve` (clears FD_CLOEXEC).
pub fn keep_across_exec(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we borrow; F_SETFD takes an int flag set.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Takes ownership of a descriptor number inherited across `execve`, once
/// fstat says it is open.
pub fn adopt(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 3 || super::fd_identity(fd).is_none() {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("descriptor {fd} is not open")));
    }
    // SAFETY: the previous image left `fd` open for us and nothing in this
    // image has opened or claimed it (it is read once, at start).
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: as in `keep_across_exec`; the next image gets it again only
    // if it is handed over again.
    unsafe { libc::fcntl(owned.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok(owned)
}
