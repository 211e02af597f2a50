//! TSIG (RFC 8945) on top of hickory-proto's `TSigner`: verify a signed request,
//! sign its response, and sign every message of a multi-message transfer. The
//! HMACs are hickory's (aws-lc-rs); this module only decides what is signed.

use hickory_proto::op::Message;
use hickory_proto::rr::TSigner;
use hickory_proto::rr::rdata::tsig::{TSIG, TsigAlgorithm, TsigError, make_tsig_record};
use hickory_proto::rr::{Name, Record};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

use crate::access::TsigKey;
use crate::wire::u16_at;

/// The fudge we sign with and accept (RFC 8945 section 10 recommends 300 s).
pub const FUDGE: u16 = 300;

/// A request whose TSIG verified: what its response is signed with.
#[derive(Clone)]
pub struct Signed {
    pub signer: TSigner,
    /// The request's MAC, which the first response MAC covers.
    pub request_mac: Vec<u8>,
    pub key: Name,
}

impl std::fmt::Debug for Signed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signed").field("key", &self.key).finish()
    }
}

/// What a request's TSIG says.
#[derive(Debug)]
pub enum Verdict {
    /// No TSIG record.
    Unsigned,
    /// Verified: answer, and sign the answer.
    Signed(Signed),
    /// Answer NOTAUTH with this TSIG error (RFC 8945 section 5.2); for `BadTime`
    /// the response is signed with `Signed`.
    Error {
        error: TsigError,
        /// The TSIG record to send: unsigned for BADKEY and BADSIG.
        unsigned: Option<Box<Record>>,
        signed: Option<Box<Signed>>,
    },
}

/// Checks the TSIG of `query` (already parsed as `msg`, TSIG last) against `keys`
/// at `now` (Unix seconds).
pub fn verify(query: &[u8], msg: &Message, keys: &[TsigKey], now: u64) -> Verdict {
    // hickory-proto parses a final TSIG into `signature`, not `additionals`.
    let Some(rr) = msg.signature.as_deref() else {
        return Verdict::Unsigned;
    };
    let tsig = &rr.data;
    let key_name = rr.name.to_lowercase();
    let unsigned = |error: TsigError| {
        let rdata = TSIG::new(
            tsig.algorithm.clone(),
            tsig.time,
            tsig.fudge,
            Vec::new(),
            msg.metadata.id,
            Some(error),
            Vec::new(),
        );
        let mut record = make_tsig_record(rr.name.clone(), rdata).into_record_of_rdata();
        record.ttl = 0;
        record
    };
    // Algorithm names compare without regard to case (they are domain names); the
    // MAC covers the name in lower case, so a request that wrote it otherwise is
    // verified from a copy with it lowered.
    let algorithm = match &tsig.algorithm {
        TsigAlgorithm::Unknown(name) => TsigAlgorithm::from_name(name.to_lowercase()),
        known => known.clone(),
    };
    let lowered;
    let query = if algorithm == tsig.algorithm {
        query
    } else {
        match crate::wire::tsig_algorithm_lowercased(query) {
            Some(copy) => {
                lowered = copy;
                &lowered[..]
            }
            None => query,
        }
    };
    let Some(key) = keys
        .iter()
        .find(|k| k.name == key_name && k.algorithm == algorithm)
    else {
        return Verdict::Error {
            error: TsigError::BadKey,
            unsigned: Some(Box::new(unsigned(TsigError::BadKey))),
            signed: None,
        };
    };
    let Ok(signer) = TSigner::new(
        key.secret.clone(),
        key.algorithm.clone(),
        key.name.clone(),
        FUDGE,
    ) else {
        return Verdict::Error {
            error: TsigError::BadKey,
            unsigned: Some(Box::new(unsigned(TsigError::BadKey))),
            signed: None,
        };
    };
    let Ok((request_mac, time, _)) = signer.verify_message_byte(query, None, true) else {
        return Verdict::Error {
            error: TsigError::BadSig,
            unsigned: Some(Box::new(unsigned(TsigError::BadSig))),
            signed: None,
        };
    };
    let signed = Signed {
        signer,
        request_mac,
        key: key.name.clone(),
    };
    // The window is the request's fudge, but never more than ours: a signer cannot
    // widen it to hours by asking (RFC 8945 section 5.2.3 leaves the check to us).
    if now.abs_diff(time) > u64::from(tsig.fudge.min(FUDGE)) {
        return Verdict::Error {
            error: TsigError::BadTime,
            unsigned: None,
            signed: Some(Box::new(signed)),
        };
    }
    Verdict::Signed(signed)
}

static SIGN_FAILURES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Messages that could not be signed so far (each one was not sent).
pub fn sign_failures() -> u64 {
    SIGN_FAILURES.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
thread_local! {
    /// Test seam: signing on this thread fails while set.
    pub(crate) static FAIL_SIGNING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Counts a failure (`None`), and makes the test seam fail.
fn counted(signed: impl FnOnce() -> Option<Vec<u8>>) -> Option<Vec<u8>> {
    #[cfg(test)]
    let mac = if FAIL_SIGNING.with(std::cell::Cell::get) {
        None
    } else {
        signed()
    };
    #[cfg(not(test))]
    let mac = signed();
    if mac.is_none() {
        SIGN_FAILURES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    mac
}

/// Signs `response` (a complete message without TSIG) as the answer to the request
/// `signed` verified, and appends the TSIG record. Returns the MAC, which the next
/// message of a transfer covers. `error` BADTIME carries our time (RFC 8945 5.2.3).
/// `None`: not signed (counted in [`sign_failures`]); the message must not be sent.
pub fn sign_response(
    response: &mut Vec<u8>,
    signed: &Signed,
    now: u64,
    error: Option<TsigError>,
) -> Option<Vec<u8>> {
    counted(|| sign_response_unchecked(response, signed, now, error))
}

fn sign_response_unchecked(
    response: &mut Vec<u8>,
    signed: &Signed,
    now: u64,
    error: Option<TsigError>,
) -> Option<Vec<u8>> {
    let id = u16::from_be_bytes([*response.first()?, *response.get(1)?]);
    let other = match error {
        Some(TsigError::BadTime) => now.to_be_bytes()[2..].to_vec(),
        _ => Vec::new(),
    };
    let stub = TSIG::new(
        signed.signer.algorithm().clone(),
        now,
        FUDGE,
        Vec::new(),
        id,
        error,
        other,
    );
    let tbs = signed
        .signer
        .encode_response_tbs(&signed.request_mac, response, &stub)
        .ok()?;
    let mac = signed.signer.sign(&tbs).ok()?;
    append(response, &signed.key, stub.set_mac(mac.clone()))?;
    Some(mac)
}

/// Signs a later message of a multi-message response: its MAC covers the previous
/// MAC, the message and the timers only (RFC 8945 section 5.3.1). `None`: as
/// [`sign_response`].
pub fn sign_next(
    response: &mut Vec<u8>,
    signer: &TSigner,
    previous_mac: &[u8],
    now: u64,
) -> Option<Vec<u8>> {
    counted(|| sign_next_unchecked(response, signer, previous_mac, now))
}

fn sign_next_unchecked(
    response: &mut Vec<u8>,
    signer: &TSigner,
    previous_mac: &[u8],
    now: u64,
) -> Option<Vec<u8>> {
    let id = u16::from_be_bytes([*response.first()?, *response.get(1)?]);
    let mut tbs = Vec::with_capacity(previous_mac.len() + response.len() + 10);
    tbs.extend_from_slice(&u16::try_from(previous_mac.len()).ok()?.to_be_bytes());
    tbs.extend_from_slice(previous_mac);
    tbs.extend_from_slice(response);
    tbs.extend_from_slice(&now.to_be_bytes()[2..]);
    tbs.extend_from_slice(&FUDGE.to_be_bytes());
    let mac = signer.sign(&tbs).ok()?;
    let tsig = TSIG::new(
        signer.algorithm().clone(),
        now,
        FUDGE,
        mac.clone(),
        id,
        None,
        Vec::new(),
    );
    append(response, signer.signer_name(), tsig)?;
    Some(mac)
}

/// Appends a TSIG record to a message and counts it in ARCOUNT.
fn append(message: &mut Vec<u8>, key: &Name, tsig: TSIG) -> Option<()> {
    let record = make_tsig_record(key.clone(), tsig);
    let end = u32::try_from(message.len()).ok()?;
    let mut encoder = BinEncoder::with_offset(message, end);
    record.emit(&mut encoder).ok()?;
    let arcount = u16_at(message, 10)?.checked_add(1)?;
    message[10..12].copy_from_slice(&arcount.to_be_bytes());
    Some(())
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::RecordType;

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn keys() -> Vec<TsigKey> {
        vec![TsigKey {
            name: Name::from_ascii("k.").unwrap(),
            algorithm: TsigAlgorithm::HmacSha256,
            secret: SECRET.to_vec(),
        }]
    }

    /// A query signed with `fudge` at `time`.
    fn request(fudge: u16, time: u64) -> (Vec<u8>, Message) {
        let signer = TSigner::new(
            SECRET.to_vec(),
            TsigAlgorithm::HmacSha256,
            Name::from_ascii("k.").unwrap(),
            fudge,
        )
        .unwrap();
        let mut m = Message::new(7, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(
            Name::from_ascii("example.com.").unwrap(),
            RecordType::SOA,
        ));
        let (tsig, _) = signer.sign_message(&m, time).unwrap();
        m.signature = Some(tsig);
        let bytes = m.to_vec().unwrap();
        let parsed = Message::from_vec(&bytes).unwrap();
        (bytes, parsed)
    }

    fn error(v: Verdict) -> Option<TsigError> {
        match v {
            Verdict::Error { error, .. } => Some(error),
            Verdict::Signed(_) => None,
            Verdict::Unsigned => panic!("unsigned"),
        }
    }

    #[test]
    fn the_time_window_is_at_most_ours_whatever_the_request_asks() {
        let now = 1_800_000_000;
        let (bytes, msg) = request(300, now - 300);
        assert_eq!(error(verify(&bytes, &msg, &keys(), now)), None);
        let (bytes, msg) = request(300, now + 301);
        assert_eq!(
            error(verify(&bytes, &msg, &keys(), now)),
            Some(TsigError::BadTime)
        );
        // A fudge of 65,535 s does not buy 3,000 s of skew.
        let (bytes, msg) = request(u16::MAX, now - 3_000);
        assert_eq!(
            error(verify(&bytes, &msg, &keys(), now)),
            Some(TsigError::BadTime)
        );
        // A smaller fudge than ours narrows it.
        let (bytes, msg) = request(10, now - 11);
        assert_eq!(
            error(verify(&bytes, &msg, &keys(), now)),
            Some(TsigError::BadTime)
        );
    }

    #[test]
    fn the_algorithm_name_is_matched_in_any_case() {
        let now = 1_800_000_000;
        let (mut bytes, _) = request(300, now);
        // The MAC covers the canonical (lower-case) name; the wire may say otherwise.
        let at = bytes
            .windows(12)
            .position(|w| w == b"\x0bhmac-sha256")
            .unwrap();
        bytes[at + 1..at + 12].make_ascii_uppercase();
        let msg = Message::from_vec(&bytes).unwrap();
        assert!(matches!(
            msg.signature.as_ref().unwrap().data.algorithm,
            TsigAlgorithm::Unknown(_)
        ));
        let Verdict::Signed(signed) = verify(&bytes, &msg, &keys(), now) else {
            panic!("HMAC-SHA256 is hmac-sha256");
        };
        assert_eq!(signed.key, Name::from_ascii("k.").unwrap());
        // A wrong MAC under an upper-case name is still BADSIG; an unknown one BADKEY.
        let last = bytes.len() - 10;
        bytes[last] ^= 1;
        let msg = Message::from_vec(&bytes).unwrap();
        assert_eq!(
            error(verify(&bytes, &msg, &keys(), now)),
            Some(TsigError::BadSig)
        );
        let (mut bytes, _) = request(300, now);
        bytes[at + 9..at + 12].copy_from_slice(b"999");
        let msg = Message::from_vec(&bytes).unwrap();
        assert_eq!(
            error(verify(&bytes, &msg, &keys(), now)),
            Some(TsigError::BadKey)
        );
    }
}
