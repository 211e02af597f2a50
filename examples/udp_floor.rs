//! The least a UDP DNS server built on the socket API can cost per query: a responder
//! that does no DNS work at all. It receives with recvmmsg, turns each query into a
//! response by setting the QR bit (the question is echoed, nothing else), and sends
//! with sendmmsg, in batches of 32 on one blocking socket bound by the server's own
//! `bind_udp`: the same system calls, in the same pattern, on the same socket settings,
//! as privatelink-dns's UDP workers.
//!
//! `scripts/bench` runs it beside the real servers; its CPU per query is the kernel's
//! share (receive, send, and delivery to the client, which loopback charges to the
//! sender), a floor under every server measured there.
//!
//!     cargo run --release --example udp_floor -- 127.0.0.1:15356

use std::os::fd::AsRawFd;

const BATCH: usize = 32;
const BUF: usize = 1232;

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:15356".into());
    let addr = addr
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let socket = privatelink_dns::server::bind_udp(addr)?; // the workers' socket settings
    let fd = socket.as_raw_fd();
    let mut bufs = vec![[0u8; BUF]; BATCH];
    // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
    let mut addrs: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; BATCH];
    loop {
        // SAFETY: all-zero iovec and mmsghdr are valid; every pointer set below points
        // into `bufs`/`addrs`, which outlive both calls, with their lengths.
        let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..BATCH {
            iov[i].iov_base = bufs[i].as_mut_ptr().cast();
            iov[i].iov_len = BUF;
            msgs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            msgs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as _;
            msgs[i].msg_hdr.msg_iov = &mut iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `msgs` holds BATCH valid headers.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as _,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            continue;
        }
        for i in 0..n as usize {
            let len = msgs[i].msg_len as usize;
            if len >= 12 {
                bufs[i][2] |= 0x80; // QR
            }
            iov[i].iov_len = len;
        }
        // SAFETY: the first `n` headers now describe the received queries and senders.
        unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as _, 0) };
    }
}
