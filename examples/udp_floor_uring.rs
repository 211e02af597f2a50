//! `examples/udp_floor.rs` on io_uring instead of recvmmsg/sendmmsg, to measure whether
//! io_uring lowers the kernel's per-query cost for a UDP responder (on this project's
//! machines it raised it: see docs/performance.md). No DNS work: each query goes back
//! with QR set.
//!
//! One multishot `RecvMsgMulti` fills buffers from a provided-buffer ring; each answer
//! is a `SendMsg` with `CQE_SKIP_SUCCESS`; the ring is single-issuer with deferred task
//! work, so a wakeup costs one `io_uring_enter` that both submits and waits.
//!
//!     cargo run --release --example udp_floor_uring -- 127.0.0.1:15357
//!     scripts/bench --io-uring    # adds it to the side-by-side run

use io_uring::{IoUring, cqueue, opcode, squeue, types};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, Ordering};

/// Buffers in the provided-buffer ring, and answer slots.
const NBUF: usize = 256;
const BUFSZ: usize = 2048;
const GROUP: u16 = 7;
const RECV: u64 = 0;
const SEND: u64 = 1;

/// `struct io_uring_buf`; the ring's tail is the `resv` field of entry 0.
#[repr(C)]
struct RingBuf {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

struct Answer {
    data: [u8; BUFSZ],
    addr: libc::sockaddr_storage,
    iov: libc::iovec,
    msg: libc::msghdr,
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:15357".into());
    let addr = addr
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let socket = privatelink_dns::server::bind_udp(addr)?; // the workers' socket settings
    let fd = types::Fd(socket.as_raw_fd());
    let mut ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_coop_taskrun()
        .setup_defer_taskrun()
        .build(1024)?;

    let layout = std::alloc::Layout::from_size_align(NBUF * size_of::<RingBuf>(), 4096)
        .expect("valid layout");
    // SAFETY: the layout has a non-zero size. The ring is never freed: it must outlive
    // the io_uring instance, and both live until the process exits.
    let entries = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<RingBuf>();
    assert!(!entries.is_null(), "out of memory");
    let mut bufs = vec![0u8; NBUF * BUFSZ];
    let provide = |slot: u16, bid: u16, bufs: &mut [u8]| {
        // SAFETY: slot < NBUF (callers reduce it modulo NBUF) and `entries` holds NBUF
        // entries; the buffer address points into `bufs`, which outlives the ring use.
        unsafe {
            let e = &mut *entries.add(usize::from(slot) % NBUF);
            e.addr = bufs.as_mut_ptr().add(usize::from(bid) * BUFSZ) as u64;
            e.len = BUFSZ as u32;
            e.bid = bid;
        }
    };
    for bid in 0..NBUF as u16 {
        provide(bid, bid, &mut bufs);
    }
    // SAFETY: offset 14 is the u16 tail inside entry 0, suitably aligned; the kernel
    // reads it concurrently, hence the atomic.
    let tail = unsafe { &*entries.cast::<u8>().add(14).cast::<AtomicU16>() };
    let mut tail_value = NBUF as u16;
    tail.store(tail_value, Ordering::Release);
    // SAFETY: `entries` is page-aligned, holds NBUF entries, and lives as long as `ring`.
    unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(entries as u64, NBUF as u16, GROUP, 0)?
    };

    // SAFETY: an all-zero msghdr is valid; it only tells the kernel the name length.
    let mut recv_msg: libc::msghdr = unsafe { std::mem::zeroed() };
    recv_msg.msg_namelen = size_of::<libc::sockaddr_storage>() as _;
    let recv = opcode::RecvMsgMulti::new(fd, &recv_msg, GROUP)
        .build()
        .user_data(RECV);
    // SAFETY: `recv_msg` outlives every submission that points at it.
    unsafe { ring.submission().push(&recv).expect("queue has room") };
    // SAFETY: Answer is plain old data; all zeroes is a valid value.
    let mut answers: Vec<Answer> = (0..NBUF).map(|_| unsafe { std::mem::zeroed() }).collect();
    let mut next = 0;
    let mut done = Vec::with_capacity(1024);
    loop {
        ring.submit_and_wait(1)?;
        done.clear();
        done.extend(
            ring.completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        let mut rearm = false;
        for &(kind, result, flags) in &done {
            if kind != RECV {
                continue; // a failed send; successful ones post nothing
            }
            rearm |= !cqueue::more(flags);
            let (Ok(len), Some(bid)) = (usize::try_from(result), cqueue::buffer_select(flags))
            else {
                continue;
            };
            let buffer = &bufs[usize::from(bid) * BUFSZ..][..len];
            if let Ok(out) = types::RecvMsgOut::parse(buffer, &recv_msg) {
                let query = out.payload_data();
                let name = out.name_data();
                let a = &mut answers[next];
                next = (next + 1) % NBUF;
                a.data[..query.len()].copy_from_slice(query);
                if query.len() >= 12 {
                    a.data[2] |= 0x80; // QR
                }
                let name_len = name.len().min(size_of::<libc::sockaddr_storage>());
                // SAFETY: both regions are at least `name_len` bytes and do not overlap.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        name.as_ptr(),
                        (&mut a.addr as *mut libc::sockaddr_storage).cast::<u8>(),
                        name_len,
                    )
                };
                a.iov = libc::iovec {
                    iov_base: a.data.as_mut_ptr().cast(),
                    iov_len: query.len(),
                };
                a.msg.msg_name = (&mut a.addr as *mut libc::sockaddr_storage).cast();
                a.msg.msg_namelen = name_len as _;
                a.msg.msg_iov = &mut a.iov;
                a.msg.msg_iovlen = 1;
                let send = opcode::SendMsg::new(fd, &a.msg)
                    .build()
                    .flags(squeue::Flags::SKIP_SUCCESS)
                    .user_data(SEND);
                // SAFETY: the answer slot is not reused until NBUF later answers; UDP
                // sends complete when submitted, long before that.
                unsafe { ring.submission().push(&send).expect("queue has room") };
            }
            provide(tail_value, bid, &mut bufs);
            tail_value = tail_value.wrapping_add(1);
            tail.store(tail_value, Ordering::Release);
        }
        if rearm {
            // SAFETY: as for the first submission.
            unsafe { ring.submission().push(&recv).expect("queue has room") };
        }
    }
}
