//! Bad input never panics and gets FORMERR or no reply: a corpus of classic
//! malformed packets, then random and mutated packets through the core.

use std::str::FromStr;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};
use privatelink_dns::answer::{Transport, answer};
use privatelink_dns::config::Config;
use privatelink_dns::snapshot::{self, Snapshot};
use proptest::prelude::*;

fn snap() -> Snapshot {
    let config = Config::demo();
    snapshot::build(
        &privatelink_dns::discovery::static_zones(&config),
        config.server.settings,
        None,
        1,
    )
}

fn header(qd: u16, an: u16, ns: u16, ar: u16) -> Vec<u8> {
    let mut h = vec![0xAB, 0xCD, 0x01, 0x00];
    for c in [qd, an, ns, ar] {
        h.extend_from_slice(&c.to_be_bytes());
    }
    h
}

fn good_query() -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 0xABCD;
    m.add_query(Query::query(
        Name::from_str("internal.example.com.").unwrap(),
        RecordType::A,
    ));
    m.to_vec().unwrap()
}

const OPT_RR: [u8; 11] = [0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0];

/// (what, packet)
fn corpus() -> Vec<(&'static str, Vec<u8>)> {
    let q = good_query();
    let question = q[12..].to_vec();
    let with = |h: Vec<u8>, rest: &[&[u8]]| [h, rest.concat()].concat();
    let long_name: Vec<u8> = {
        // 5 labels of 63 bytes: 320 bytes, over the 255 limit.
        let mut n = Vec::new();
        for _ in 0..5 {
            n.push(63);
            n.extend_from_slice(&[b'a'; 63]);
        }
        n.push(0);
        n
    };
    vec![
        ("empty", vec![]),
        ("truncated header", q[..7].to_vec()),
        ("header only, one question announced", header(1, 0, 0, 0)),
        (
            "label runs past the end",
            with(header(1, 0, 0, 0), &[&[10, b'a', b'b', b'c']]),
        ),
        (
            "question without type and class",
            with(header(1, 0, 0, 0), &[&[3, b'c', b'o', b'm', 0]]),
        ),
        (
            "compression pointer to itself",
            with(header(1, 0, 0, 0), &[&[0xC0, 12, 0, 1, 0, 1]]),
        ),
        (
            "compression pointer forward",
            with(header(1, 0, 0, 0), &[&[0xC0, 40, 0, 1, 0, 1]]),
        ),
        (
            "name longer than 255 bytes",
            with(header(1, 0, 0, 0), &[&long_name, &[0, 1, 0, 1]]),
        ),
        (
            "reserved label type 0x40",
            with(header(1, 0, 0, 0), &[&[0x41, b'a', 0, 0, 1, 0, 1]]),
        ),
        (
            "reserved label type 0x80",
            with(header(1, 0, 0, 0), &[&[0x81, b'a', 0, 0, 1, 0, 1]]),
        ),
        (
            "two OPT records",
            with(header(1, 0, 0, 2), &[&question, &OPT_RR, &OPT_RR]),
        ),
        (
            "OPT in the answer section",
            with(header(1, 1, 0, 0), &[&question, &OPT_RR]),
        ),
        (
            "OPT with rdlength past the end",
            with(
                header(1, 0, 0, 1),
                &[&question, &[0, 0, 41, 4, 0xD0, 0, 0, 0, 0, 0, 9, 1]],
            ),
        ),
        (
            "announced answers missing",
            with(header(1, 5, 0, 0), &[&question]),
        ),
        (
            "announced additional missing",
            with(header(1, 0, 0, 3), &[&question]),
        ),
        (
            "65535 questions announced",
            with(header(0xFFFF, 0, 0, 0), &[&question]),
        ),
        ("no question", header(0, 0, 0, 0)),
        (
            "two questions",
            with(header(2, 0, 0, 0), &[&question, &question]),
        ),
    ]
}

fn assert_formerr_or_nothing(what: &str, packet: &[u8], snap: &Snapshot) {
    for transport in [Transport::Udp, Transport::Tcp] {
        if let Some(r) = answer(packet, snap, transport) {
            assert_eq!(
                r.bytes[3] & 0x0F,
                1,
                "{what}: FORMERR expected, got {:?}",
                r.rcode
            );
            assert_eq!(&r.bytes[..2], &packet[..2], "{what}: ID copied");
            assert!(r.bytes[2] & 0x80 != 0, "{what}: QR set");
            Message::from_vec(&r.bytes)
                .unwrap_or_else(|e| panic!("{what}: our FORMERR parses: {e}"));
        } else {
            assert!(packet.len() < 12, "{what}: only runts are dropped");
        }
    }
}

#[test]
fn malformed_corpus_gets_formerr_or_nothing() {
    let snap = snap();
    for (what, packet) in corpus() {
        assert_formerr_or_nothing(what, &packet, &snap);
    }
}

#[test]
fn a_good_query_still_works_after_the_corpus() {
    let snap = snap();
    let r = answer(&good_query(), &snap, Transport::Udp).unwrap();
    assert_eq!(r.bytes[3] & 0x0F, 0);
    assert_eq!(Message::from_vec(&r.bytes).unwrap().answers.len(), 3);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    /// Random bytes: no panic; any reply is a well-formed response with our ID.
    #[test]
    fn random_bytes_never_panic(packet in proptest::collection::vec(any::<u8>(), 0..600)) {
        let snap = snap();
        for transport in [Transport::Udp, Transport::Tcp] {
            if let Some(r) = answer(&packet, &snap, transport) {
                prop_assert_eq!(&r.bytes[..2], &packet[..2]);
                prop_assert!(Message::from_vec(&r.bytes).is_ok());
            }
        }
    }

    /// A valid query (with EDNS) with bytes flipped, cut or extended: no panic, and
    /// UDP replies stay within 512 bytes or the advertised size.
    #[test]
    fn mutated_queries_never_panic(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in any::<usize>(),
        extra in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut m = Message::query();
        m.add_query(Query::query(Name::from_str("api.internal.example.com.").unwrap(), RecordType::AAAA));
        m.set_edns(Edns::new());
        let mut packet = m.to_vec().unwrap();
        for (at, byte) in flips {
            let i = at % packet.len();
            packet[i] ^= byte;
        }
        packet.truncate(cut % (packet.len() + 1));
        packet.extend_from_slice(&extra);
        let snap = snap();
        if let Some(r) = answer(&packet, &snap, Transport::Udp) {
            // The demo answers are small; the size rule is checked with large ones below.
            prop_assert!(Message::from_vec(&r.bytes).is_ok());
        }
        let _ = answer(&packet, &snap, Transport::Tcp);
    }
}

/// Zones with a 40-address name (~700 bytes answered) and a 150-address one (~2.5 KB).
fn large_snap() -> Snapshot {
    let ips = |n: usize| {
        (0..n)
            .map(|i| format!("\"10.{}.{}.1\"", i / 200, i % 200))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = format!(
        "[[zone]]\norigin = \"example.com\"\n\
         [[zone.record]]\nname = \"mid\"\na = [{}]\n\
         [[zone.record]]\nname = \"big\"\na = [{}]\n",
        ips(40),
        ips(150)
    );
    let config = Config::from_toml(&text, "t").unwrap();
    snapshot::build(
        &privatelink_dns::discovery::static_zones(&config),
        config.server.settings,
        None,
        1,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// A UDP answer never exceeds 512 bytes without EDNS, nor the client's advertised
    /// size (at least 512) or our own 1232 with it; what does not fit is TC=1 (with
    /// OPT kept), what fits is the whole answer.
    #[test]
    fn udp_answers_fit_the_advertised_size(
        big in any::<bool>(),
        edns in proptest::option::of((any::<u16>(), any::<bool>())),
    ) {
        let name = if big { "big.example.com." } else { "mid.example.com." };
        let mut m = Message::query();
        m.add_query(Query::query(Name::from_str(name).unwrap(), RecordType::A));
        let limit = match edns {
            None => 512,
            Some((size, dnssec_ok)) => {
                let mut e = Edns::new();
                e.set_max_payload(size);
                e.set_dnssec_ok(dnssec_ok);
                m.set_edns(e);
                usize::from(size).clamp(512, 1232)
            }
        };
        let q = m.to_vec().unwrap();
        let snap = large_snap();
        let udp = answer(&q, &snap, Transport::Udp).expect("an answer");
        let full = answer(&q, &snap, Transport::Tcp).expect("an answer");
        let parsed = Message::from_vec(&udp.bytes).unwrap();
        prop_assert!(udp.bytes.len() <= limit, "{} > {limit}", udp.bytes.len());
        if full.bytes.len() <= limit {
            prop_assert!(!parsed.metadata.truncation);
            prop_assert_eq!(parsed.answers.len(), if big { 150 } else { 40 });
        } else {
            prop_assert!(parsed.metadata.truncation, "TC=1 when it does not fit");
            prop_assert_eq!(parsed.edns.is_some(), edns.is_some(), "OPT kept with TC");
        }
    }
}
