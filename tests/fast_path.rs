//! The UDP fast path against the general core: for every query the fast path
//! answers, the general core must produce the very same bytes. Queries are generated
//! around the names of a test zone set (hits, NODATA, NXDOMAIN, ENTs, wildcards,
//! mixed case, EDNS variants, flags) and mutated.

use std::str::FromStr;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use privatelink_dns::answer::{Transport, answer};
use privatelink_dns::config::Config;
use privatelink_dns::fast::{Fast, answer_udp};
use privatelink_dns::snapshot::{self, Snapshot};
use proptest::prelude::*;

const ZONES: &str = r#"
[server]
udp-payload-size = 1232

[[zone]]
origin = "internal.example.com"
ttl = 60
[[zone.record]]
name = "@"
a = ["10.0.1.15", "10.0.2.27", "10.0.3.44"]
[[zone.record]]
name = "api"
a = ["10.0.1.16"]
aaaa = ["fd00::16", "fd00::17"]
[[zone.record]]
name = "a.b.c"
aaaa = ["fd00::30"]
[[zone.record]]
name = "*.wild"
a = ["10.0.9.9"]
[[zone.record]]
name = "exists.wild"
aaaa = ["fd00::99"]
[[zone.record]]
name = "big"
a = [BIG]

[[zone]]
origin = "sub.internal.example.com"
[[zone.record]]
name = "x"
a = ["10.1.0.1"]

[[zone]]
origin = "s3.ap-northeast-1.amazonaws.com"
[[zone.record]]
name = "*"
a = ["10.0.1.30", "10.0.2.31"]
"#;

fn snap() -> Snapshot {
    let big: Vec<String> = (0..40).map(|i| format!("\"198.51.100.{i}\"")).collect();
    let text = ZONES.replace("BIG", &big.join(", "));
    let config = Config::from_toml(&text, "t").unwrap();
    snapshot::build(
        &privatelink_dns::discovery::static_zones(&config),
        config.server.settings,
        None,
        1_700_000_000,
    )
}

const NAMES: &[&str] = &[
    "internal.example.com.",
    "api.internal.example.com.",
    "a.b.c.internal.example.com.",
    "b.c.internal.example.com.",
    "c.internal.example.com.",
    "nope.internal.example.com.",
    "deep.nope.internal.example.com.",
    "x.wild.internal.example.com.",
    "y.x.wild.internal.example.com.",
    "exists.wild.internal.example.com.",
    "under.exists.wild.internal.example.com.",
    "*.wild.internal.example.com.",
    "wild.internal.example.com.",
    "big.internal.example.com.",
    "sub.internal.example.com.",
    "x.sub.internal.example.com.",
    "y.sub.internal.example.com.",
    "s3.ap-northeast-1.amazonaws.com.",
    "my-bucket.s3.ap-northeast-1.amazonaws.com.",
    "a.b.s3.ap-northeast-1.amazonaws.com.",
    "example.com.",
    "notinternal.example.com.",
    "com.",
];

fn mixed_case(name: &str, mask: u64) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

#[derive(Debug, Clone)]
struct Spec {
    name: usize,
    case_mask: u64,
    qtype: u16,
    class: u16,
    id: u16,
    rd: bool,
    cd: bool,
    edns: Option<(u16, bool, u8)>,
}

fn build(spec: &Spec) -> Vec<u8> {
    let name = mixed_case(NAMES[spec.name], spec.case_mask);
    let mut m = Message::query();
    m.metadata.id = spec.id;
    m.metadata.recursion_desired = spec.rd;
    m.metadata.checking_disabled = spec.cd;
    let mut q = Query::query(Name::from_str(&name).unwrap(), RecordType::from(spec.qtype));
    q.set_query_class(DNSClass::from(spec.class));
    m.add_query(q);
    if let Some((size, dnssec_ok, version)) = spec.edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        e.set_dnssec_ok(dnssec_ok);
        e.set_version(version);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0..NAMES.len(),
        prop_oneof![Just(0u64), any::<u64>()],
        prop_oneof![
            Just(1u16),
            Just(28u16),
            Just(6u16),
            Just(2u16),
            Just(255u16),
            Just(16u16)
        ],
        prop_oneof![Just(1u16), Just(1u16), Just(3u16)],
        any::<u16>(),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![
            Just(None),
            (
                prop_oneof![Just(512u16), Just(1232u16), Just(4096u16), 0u16..2000],
                any::<bool>(),
                prop_oneof![Just(0u8), Just(0u8), Just(1u8)]
            )
                .prop_map(Some),
        ],
    )
        .prop_map(|(name, case_mask, qtype, class, id, rd, cd, edns)| Spec {
            name,
            case_mask,
            qtype,
            class,
            id,
            rd,
            cd,
            edns,
        })
}

fn check(query: &[u8], snap: &Snapshot) -> Result<bool, TestCaseError> {
    let mut out = [0u8; 4096];
    match answer_udp(query, snap, &mut out) {
        Fast::Fallback => Ok(false),
        Fast::Answered { len, rcode, qtype } => {
            let general = answer(query, snap, Transport::Udp);
            let general = general.expect("the general core answers what the fast path answers");
            prop_assert_eq!(
                &out[..len],
                &general.bytes[..],
                "bytes differ for {:?}",
                query
            );
            prop_assert_eq!(u16::from(rcode), u16::from(general.rcode));
            prop_assert_eq!(
                Some(qtype),
                general.question.map(|q| u16::from(q.query_type()))
            );
            Ok(true)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn fast_path_equals_general_core(s in spec()) {
        let snap = snap();
        check(&build(&s), &snap)?;
    }

    #[test]
    fn mutated_queries_agree_too(s in spec(), at in any::<usize>(), byte in any::<u8>(), cut in 0usize..4) {
        let snap = snap();
        let mut q = build(&s);
        let i = at % q.len();
        q[i] = byte;
        q.truncate(q.len().saturating_sub(cut));
        check(&q, &snap)?;
    }
}

/// The fast path really takes the common queries (a fallback for everything would
/// pass the property test trivially).
#[test]
fn common_queries_take_the_fast_path() {
    let snap = snap();
    let mut out = [0u8; 4096];
    for (name, qtype, edns) in [
        ("internal.example.com.", 1, None),
        ("api.internal.example.com.", 28, Some((1232, false, 0))),
        ("api.internal.example.com.", 1, Some((4096, true, 0))),
        ("nope.internal.example.com.", 1, None),
        ("b.c.internal.example.com.", 1, None),
        ("x.wild.internal.example.com.", 1, None),
        ("x.wild.internal.example.com.", 28, Some((1232, false, 0))),
        ("my-bucket.s3.ap-northeast-1.amazonaws.com.", 1, None),
        ("x.sub.internal.example.com.", 1, None),
    ] {
        let s = Spec {
            name: NAMES.iter().position(|n| *n == name).unwrap(),
            case_mask: 0,
            qtype,
            class: 1,
            id: 7,
            rd: true,
            cd: false,
            edns,
        };
        let q = build(&s);
        assert!(check(&q, &snap).unwrap(), "fast path for {name} {qtype}");
        assert!(matches!(
            answer_udp(&q, &snap, &mut out),
            Fast::Answered { .. }
        ));
    }
    // And the unusual ones fall back.
    for (name, qtype, class, edns) in [
        ("example.com.", 1, 1, None),          // out of zone: REFUSED
        ("internal.example.com.", 6, 1, None), // SOA
        ("internal.example.com.", 1, 3, None), // CH
        ("internal.example.com.", 1, 1, Some((1232, false, 1))), // EDNS version 1
        ("big.internal.example.com.", 1, 1, None), // does not fit 512: TC
    ] {
        let s = Spec {
            name: NAMES.iter().position(|n| *n == name).unwrap(),
            case_mask: 0,
            qtype,
            class,
            id: 7,
            rd: true,
            cd: false,
            edns,
        };
        assert_eq!(
            answer_udp(&build(&s), &snap, &mut out),
            Fast::Fallback,
            "{name} {qtype} {class}"
        );
    }
}
