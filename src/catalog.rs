//! RFC 9432 catalog zones, version 2: one zone that lists the member zones, so
//! secondaries that consume it (BIND `catalog-zones`, Knot `catalog-role:
//! interpret`) add and drop member zones with no edit on their side.
//!
//! Pure: the members, with the IDs the previous catalog gave them, in; the member
//! list with IDs and the catalog's own records out. [`crate::snapshot::build`]
//! makes the zone (its serial changes exactly when this list does), and the
//! answering core answers it only to clients that may transfer it.
//!
//! Member IDs (the label in `<id>.zones.<catalog>`): a member keeps its ID while it
//! is listed; a member added to a catalog that already exists gets one derived from
//! its name and the time, so one removed and later re-added gets a new ID and its
//! consumers start it afresh (RFC 9432 section 5.4). Members of the first catalog a
//! process builds get an ID from their name alone, the same at every start, unless
//! `state-dir` saved the IDs (see [`crate::state`]).

use hickory_proto::rr::rdata::{PTR, TXT};
use hickory_proto::rr::{Name, RData, Record};
use rustc_hash::FxHashMap;

/// The catalog schema version we publish (RFC 9432 section 4.2.1).
pub const VERSION: &str = "2";

/// A member zone and its ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub zone: Name,
}

/// An ID for `zone` in generation `generation`: 16 hex digits of FNV-1a over its
/// lower-cased name and the generation. Stable across builds and versions.
pub fn id(zone: &Name, generation: u64) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let name = zone.to_lowercase().to_ascii();
    for b in name.bytes().chain(generation.to_be_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// IDs for `zones` (lower-cased): the ID in `previous` for a zone it lists; for
/// another, [`id`] of generation 0 when there is no previous catalog, of `now`
/// otherwise. Sorted by zone name (canonical order).
pub fn assign(zones: &[Name], previous: Option<&FxHashMap<Name, String>>, now: u64) -> Vec<Member> {
    let mut members: Vec<Member> = zones
        .iter()
        .map(|zone| Member {
            id: match previous {
                Some(ids) => ids.get(zone).cloned().unwrap_or_else(|| id(zone, now)),
                None => id(zone, 0),
            },
            zone: zone.clone(),
        })
        .collect();
    members.sort_by(|a, b| a.zone.cmp(&b.zone));
    members.dedup_by(|a, b| a.zone == b.zone);
    members
}

/// The records of a catalog besides its SOA and NS: `version` TXT "2", and one
/// `<id>.zones` PTR per member, owned under `catalog`; `None` for a member whose
/// owner name would be too long (cannot happen for an ID of 16 characters and a
/// catalog name that leaves room for it; such a member is left out and logged).
pub fn records(catalog: &Name, members: &[Member], ttl: u32) -> Vec<Record> {
    let mut out = Vec::with_capacity(members.len() + 1);
    if let Ok(version) = catalog.prepend_label("version") {
        out.push(Record::from_rdata(
            version,
            ttl,
            RData::TXT(TXT::new(vec![VERSION.to_string()])),
        ));
    }
    let Ok(zones) = catalog.prepend_label("zones") else {
        return out;
    };
    for m in members {
        match zones.prepend_label(m.id.as_str()) {
            Ok(owner) => out.push(Record::from_rdata(
                owner,
                ttl,
                RData::PTR(PTR(m.zone.clone())),
            )),
            Err(_) => {
                tracing::error!(zone = %m.zone, "catalog: member owner name too long; not listed")
            }
        }
    }
    out
}

/// The members a catalog's records list: zone → ID (the reverse of [`records`]).
pub fn ids(records: &[Record]) -> FxHashMap<Name, String> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::PTR(PTR(zone)) => {
                let id = r.name.iter().next()?;
                Some((
                    zone.to_lowercase(),
                    String::from_utf8_lossy(id).into_owned(),
                ))
            }
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn ids_are_stable_while_listed_and_new_on_re_add() {
        let (a, b) = (name("a.test."), name("b.test."));
        let first = assign(&[b.clone(), a.clone()], None, 1000);
        assert_eq!(
            first.iter().map(|m| m.zone.clone()).collect::<Vec<_>>(),
            [a.clone(), b.clone()]
        );
        assert_eq!(
            first[0].id,
            id(&a, 0),
            "the first catalog: from the name alone"
        );
        assert_eq!(
            first[0].id,
            assign(std::slice::from_ref(&a), None, 99)[0].id,
            "every start"
        );
        assert_eq!(first[0].id.len(), 16);
        let cat = name("catalog.invalid.");
        let ids1 = ids(&records(&cat, &first, 0));
        assert_eq!(ids1.len(), 2);
        // b leaves, a stays: a keeps its ID.
        let second = assign(std::slice::from_ref(&a), Some(&ids1), 2000);
        assert_eq!(second[0].id, first[0].id);
        // b comes back: a new ID, not the one it had.
        let ids2 = ids(&records(&cat, &second, 0));
        let third = assign(&[a.clone(), b.clone()], Some(&ids2), 3000);
        assert_eq!(third[0].id, first[0].id);
        assert_ne!(third[1].id, first[1].id);
        assert_eq!(third[1].id, id(&b, 3000));
    }

    #[test]
    fn records_are_version_2_and_one_ptr_per_member_under_zones() {
        let cat = name("catalog.invalid.");
        let members = assign(&[name("ssm.ap-northeast-1.amazonaws.com.")], None, 0);
        let rrs = records(&cat, &members, 3600);
        let shown: Vec<String> = rrs
            .iter()
            .map(|r| format!("{} {}", r.name, r.data))
            .collect();
        assert_eq!(
            shown,
            [
                "version.catalog.invalid. 2".to_string(),
                format!(
                    "{}.zones.catalog.invalid. ssm.ap-northeast-1.amazonaws.com.",
                    members[0].id
                ),
            ]
        );
    }
}
