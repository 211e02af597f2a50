//! Any bytes as a query, over UDP and TCP, against the shared test zones: the general
//! core never panics, whatever it sends back parses as DNS and fits the transport,
//! and whenever the UDP fast path answers, it sends the general core's very bytes.
//! The zones may be transferred by anyone and a TSIG key is configured, so signed
//! requests (BADKEY, BADSIG, BADTIME, signed answers) and AXFR/IXFR requests take
//! their real paths; a transfer's every message must parse.
#![no_main]

use std::sync::OnceLock;

use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;
use privatelink_dns::answer::{Client, Transport, respond};
use privatelink_dns::config::Config;
use privatelink_dns::discovery;
use privatelink_dns::fast::{Fast, answer_udp};
use privatelink_dns::snapshot::{self, Snapshot};
use privatelink_dns::transfer::Messages;

fn snap() -> &'static Snapshot {
    static SNAP: OnceLock<Snapshot> = OnceLock::new();
    SNAP.get_or_init(|| {
        let text = concat!(
            include_str!("../../tests/data/example-zones.toml"),
            "\n[[tsig-key]]\nname = \"xfr-key\"\nsecret = \"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=\"\n",
            "\n[transfer]\nallow = [\"0.0.0.0/0\", \"::/0\"]\n",
        );
        let config = Config::from_toml(text, "example-zones.toml").expect("valid zones");
        snapshot::build(
            &discovery::static_zones(&config),
            config.server.settings,
            None,
            1_700_000_000,
        )
    })
}

/// The client: from ::1 (which the zones' transfer `allow` takes), at the time the
/// signed seeds in fuzz/seeds/answer (signed-*) were made, so their TSIG verifies.
const CLIENT: Client = Client {
    source: std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
    now: 1_700_000_000,
};

fn answer(
    query: &[u8],
    snap: &Snapshot,
    transport: Transport,
) -> Option<privatelink_dns::answer::Response> {
    respond(query, snap, transport, &CLIENT)
}

fuzz_target!(|query: &[u8]| {
    let snap = snap();
    let limit = usize::from(snap.settings.udp_payload_size);
    let udp = answer(query, snap, Transport::Udp);
    if let Some(r) = &udp {
        assert!(
            r.bytes.len() <= limit.max(512),
            "UDP answer of {} bytes",
            r.bytes.len()
        );
        Message::from_vec(&r.bytes).expect("the UDP answer parses");
    }
    if let Some(r) = answer(query, snap, Transport::Tcp) {
        match &r.transfer {
            Some(plan) => {
                let zone = snap
                    .zone(&plan.origin)
                    .expect("a transfer of a zone we have");
                for message in Messages::new(zone, plan, 1_700_000_000) {
                    assert!(message.len() <= usize::from(u16::MAX));
                    Message::from_vec(&message).expect("a transfer message parses");
                }
            }
            None => {
                assert!(r.bytes.len() <= usize::from(u16::MAX));
                Message::from_vec(&r.bytes).expect("the TCP answer parses");
            }
        }
    }
    let mut out = [0u8; 4096];
    if let Fast::Answered { len, .. } = answer_udp(query, snap, &mut out) {
        let general = udp.expect("the general core answers what the fast path answers");
        assert_eq!(&out[..len], &general.bytes[..], "fast path and core differ");
    }
});
