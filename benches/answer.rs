//! The answering core, per query kind, on both paths; and the snapshot builder.
//!
//! Run: `cargo bench --bench answer` (HTML-free; criterion prints the estimates).
//! Quick look: `cargo bench --bench answer -- --warm-up-time 1 --measurement-time 2`.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::str::FromStr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};
use privatelink_dns::answer::{Transport, answer};
use privatelink_dns::fast::{Fast, answer_udp};
use privatelink_dns::snapshot::{self, RecordData, Settings, SoaParams, ZoneData};

const ZONE: &str = "privatelink.example.";

fn zone(records: usize) -> ZoneData {
    let origin = Name::from_str(ZONE).unwrap();
    let ns = Name::from_str("ns.privatelink-dns.invalid.").unwrap();
    let mut recs: Vec<RecordData> = (0..records)
        .map(|i| RecordData {
            name: Name::from_str(&format!("vpce-svc-{i:05}.{ZONE}")).unwrap(),
            ttl: 60,
            a: (0..1 + i % 3)
                .map(|j| Ipv4Addr::new(10, (i >> 8) as u8, i as u8, j as u8 + 1))
                .collect(),
            aaaa: vec![],
        })
        .collect();
    recs.push(RecordData {
        name: Name::from_str(&format!("*.s3.{ZONE}")).unwrap(),
        ttl: 60,
        a: vec![Ipv4Addr::new(10, 9, 1, 30), Ipv4Addr::new(10, 9, 2, 31)],
        aaaa: vec![],
    });
    ZoneData {
        soa: SoaParams::defaults(&origin, ns.clone()),
        ns: vec![ns],
        ns_ttl: 3600,
        fixed: Default::default(),
        origin,
        records: recs,
        transfer: Default::default(),
    }
}

fn query(name: &str, t: RecordType, edns: bool) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 4242;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_str(name).unwrap(), t));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn answering(c: &mut Criterion) {
    let snap = snapshot::build(&[zone(1000)], Settings::default(), None, 1);
    let kinds = [
        (
            "hit",
            query(&format!("vpce-svc-00042.{ZONE}"), RecordType::A, false),
        ),
        (
            "nxdomain",
            query(&format!("missing.{ZONE}"), RecordType::A, false),
        ),
        (
            "nodata",
            query(&format!("vpce-svc-00042.{ZONE}"), RecordType::AAAA, false),
        ),
        (
            "wildcard",
            query(&format!("bucket.s3.{ZONE}"), RecordType::A, false),
        ),
        (
            "edns",
            query(&format!("vpce-svc-00042.{ZONE}"), RecordType::A, true),
        ),
    ];
    let mut general = c.benchmark_group("general_core");
    general.throughput(Throughput::Elements(1));
    for (kind, q) in &kinds {
        general.bench_function(*kind, |b| {
            b.iter(|| answer(black_box(q), &snap, Transport::Udp))
        });
    }
    general.finish();
    let mut fast = c.benchmark_group("fast_path");
    fast.throughput(Throughput::Elements(1));
    let mut out = [0u8; 4096];
    for (kind, q) in &kinds {
        assert!(
            matches!(answer_udp(q, &snap, &mut out), Fast::Answered { .. }),
            "{kind} takes the fast path"
        );
        fast.bench_function(*kind, |b| {
            b.iter(|| answer_udp(black_box(q), &snap, &mut out))
        });
    }
    fast.finish();
}

fn building(c: &mut Criterion) {
    let data = [zone(10_000)];
    let mut g = c.benchmark_group("snapshot");
    g.sample_size(10);
    g.bench_function("build_10k_records", |b| {
        b.iter(|| snapshot::build(black_box(&data), Settings::default(), None, 1))
    });
    g.finish();
}

criterion_group!(benches, answering, building);
criterion_main!(benches);
