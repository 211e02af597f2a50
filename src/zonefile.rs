//! Renders a built zone as an RFC 1035 master file, for other servers to load the
//! same data (the Knot DNS differential test, the benchmarks) and for operators
//! who want to see what is served.

use std::fmt::Write as _;

use hickory_proto::rr::Record;

use crate::snapshot::Zone;

/// The zone as a master file: SOA, NS, then every A and AAAA record, sorted.
pub fn render(zone: &Zone) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "$ORIGIN {}", zone.origin);
    let line = |out: &mut String, r: &Record| {
        let _ = writeln!(
            out,
            "{} {} IN {} {}",
            r.name,
            r.ttl,
            r.record_type(),
            r.data
        );
    };
    line(&mut out, &zone.soa);
    for ns in &zone.ns {
        line(&mut out, ns);
    }
    for (name, node) in zone.names() {
        for r in node
            .a_records(&name)
            .iter()
            .chain(&node.aaaa_records(&name))
        {
            line(&mut out, r);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::snapshot;
    use hickory_proto::rr::Name;

    #[test]
    fn renders_every_record() {
        let config = Config::demo();
        let zones = crate::discovery::static_zones(&config);
        let snap = snapshot::build(&zones, config.server.settings, None, 42);
        let zone = snap
            .zone(&Name::from_ascii("internal.example.com.").unwrap())
            .unwrap();
        let text = render(zone);
        assert!(text.starts_with("$ORIGIN internal.example.com.\n"));
        assert!(text.contains("internal.example.com. 60 IN A 10.0.1.15\n"));
        assert!(text.contains("api.internal.example.com. 60 IN AAAA fd00:ec2::16\n"));
        assert!(text.contains(" IN SOA ns.privatelink-dns.invalid. hostmaster.internal.example.com. 42 3600 900 1209600 60\n"));
        assert_eq!(text.lines().count(), 1 + 1 + 1 + 3 + 4);
    }
}
