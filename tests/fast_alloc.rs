//! The UDP fast path allocates nothing per query: a counting global allocator
//! around many answers, after a warm-up.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};
use privatelink_dns::config::Config;
use privatelink_dns::fast::{Fast, answer_udp};
use privatelink_dns::snapshot;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // Only this test's thread is counted: the harness allocates on its own threads.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn counting() -> bool {
    COUNTING.try_with(Cell::get).unwrap_or(false)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counting() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counting() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn query(name: &str, t: RecordType, edns: bool) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 42;
    m.add_query(Query::query(Name::from_str(name).unwrap(), t));
    if edns {
        m.set_edns(Edns::new());
    }
    m.to_vec().unwrap()
}

#[test]
fn fast_path_allocates_nothing_per_query() {
    let config = Config::demo();
    let snap = snapshot::build(
        &privatelink_dns::discovery::static_zones(&config),
        config.server.settings,
        None,
        1,
    );
    let queries = [
        query("internal.example.com.", RecordType::A, false), // hit
        query("api.internal.example.com.", RecordType::AAAA, true), // hit, EDNS
        query("ssm.ap-northeast-1.amazonaws.com.", RecordType::AAAA, true), // NODATA
        query("nope.internal.example.com.", RecordType::A, false), // NXDOMAIN
        query("b.s3.ap-northeast-1.amazonaws.com.", RecordType::A, true), // wildcard
        query("InTeRnAl.ExAmPlE.cOm.", RecordType::A, false), // mixed case
    ];
    let mut out = [0u8; 4096];
    for q in &queries {
        assert!(matches!(
            answer_udp(q, &snap, &mut out),
            Fast::Answered { .. }
        ));
    }
    COUNTING.with(|c| c.set(true));
    let mut answered = 0;
    for _ in 0..10_000 {
        for q in &queries {
            if let Fast::Answered { len, .. } = answer_udp(q, &snap, &mut out) {
                answered += len.min(1);
            }
        }
    }
    COUNTING.with(|c| c.set(false));
    assert_eq!(answered, 60_000);
    assert_eq!(
        ALLOCATIONS.load(Ordering::SeqCst),
        0,
        "allocations on the fast path"
    );
}
