//! RFC 1035 master files, both ways.
//!
//! - [`render`]: a built zone as a master file, for other servers to load the same
//!   data (the Knot DNS differential test, the benchmarks) and for operators who want
//!   to see what is served.
//! - [`read`]: the records of a master file, one at a time, for `[[zone]] file`: the
//!   way to give a zone thousands of static names (issue #15: a TOML document costs
//!   about 40 bytes of parser memory per byte; this costs one line at a time).
//!
//! The reader takes the subset privatelink-dns serves: A and AAAA records anywhere in
//! the zone, SOA and NS at the apex; `$ORIGIN` and `$TTL`; relative names, `@`,
//! owners left blank, parentheses, comments, class IN, TTLs with units ("1h").
//! Anything else (another type, `$INCLUDE`, `$GENERATE`) is an error that names the
//! line, never skipped. (hickory-proto's parser reads the whole file into records
//! first and its errors carry no line, so it is not used here; its name and TTL
//! parsers are.)

use std::fmt::Write as _;
use std::io::BufRead;
use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::{Name, Record, RecordType};
use hickory_proto::serialize::txt::parse_ttl;

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

/// Longest line read, in bytes: a bound for a file that is not a zone file.
pub const MAX_LINE: u64 = 64 * 1024;

/// One record of a master file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The line the record starts on, from 1.
    pub line: usize,
    /// Absolute, as written (not lower-cased).
    pub owner: Name,
    /// The owner is the one of the record before (written the same, or left blank),
    /// so a reader can skip checking it again.
    pub same_owner: bool,
    pub ttl: u32,
    pub data: Data,
}

/// The data of a record the reader takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Ns(Name),
    /// The serial is left out: privatelink-dns keeps its own.
    Soa {
        mname: Name,
        rname: Name,
        refresh: u32,
        retry: u32,
        expire: u32,
        minimum: u32,
    },
}

/// Why a master file could not be read: where, and what was expected there. The
/// message never quotes the file: a file given by mistake (`/proc/self/environ`, a
/// TSIG secret) must not end up in a log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct ReadError {
    pub line: usize,
    /// From 1, in bytes; 1 when the whole entry is at fault.
    pub column: usize,
    pub message: String,
}

/// A name from a master file as it may be shown in a message: a host name's letters,
/// digits, `-`, `_` and `*`; anything else is not shown.
pub fn shown(name: &Name) -> String {
    let plain = name.iter().all(|l| {
        l.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-_*".contains(&b))
    });
    if plain {
        name.to_string()
    } else {
        "a name with characters other than letters, digits, `-`, `_` and `*` (not shown)".into()
    }
}

/// Reads `input`, a master file for zone `origin`, and hands each record to `each`
/// in file order; a message from `each` becomes the error of that record's line. A
/// record without a TTL takes the last `$TTL`, else `default_ttl`.
pub fn read(
    input: impl BufRead,
    origin: &Name,
    default_ttl: u32,
    mut each: impl FnMut(Entry) -> Result<(), String>,
) -> Result<(), ReadError> {
    let mut lines = Lines {
        input,
        line: 0,
        buf: Vec::new(),
    };
    let mut state = State {
        origin: origin.clone(),
        ttl: default_ttl,
        owner: None,
    };
    let mut entry = Tokens::default();
    while lines.next_entry(&mut entry)? {
        let fail = |fault: Fault| {
            let (line, column) = fault
                .token
                .and_then(|i| entry.at.get(i).copied())
                .unwrap_or((entry.line, 1));
            ReadError {
                line,
                column,
                message: fault.message,
            }
        };
        if let Some(record) = state.entry(&entry).map_err(fail)? {
            each(record).map_err(|message| fail(message.into()))?;
        }
    }
    Ok(())
}

/// What is wrong with an entry, and at which of its tokens (`None`: the entry).
#[derive(Debug)]
struct Fault {
    token: Option<usize>,
    message: String,
}

impl Fault {
    fn at(token: usize, message: impl Into<String>) -> Self {
        Self {
            token: Some(token),
            message: message.into(),
        }
    }
}

impl From<String> for Fault {
    fn from(message: String) -> Self {
        Self {
            token: None,
            message,
        }
    }
}

impl From<&str> for Fault {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}

/// What earlier lines set: `$ORIGIN`, `$TTL`, the last owner (with its text, so a
/// run of records of one owner parses it once).
struct State {
    origin: Name,
    ttl: u32,
    owner: Option<(String, Name)>,
}

impl State {
    /// A directive changes the state (`None`); a record comes back.
    fn entry(&mut self, entry: &Tokens) -> Result<Option<Entry>, Fault> {
        let mut i = 0;
        let (owner, same_owner) = if entry.blank_owner {
            let (_, owner) = self
                .owner
                .as_ref()
                .ok_or("a record with a blank owner needs a record before it")?;
            (owner.clone(), true)
        } else {
            let first = entry.get(0).unwrap_or_default();
            i = 1;
            let directive = if first.starts_with('$') {
                first.to_ascii_uppercase()
            } else {
                String::new()
            };
            match directive.as_str() {
                "$ORIGIN" => {
                    self.origin = self.name(entry, one(entry, "$ORIGIN")?)?;
                    self.owner = None;
                    return Ok(None);
                }
                "$TTL" => {
                    self.ttl = ttl(entry, one(entry, "$TTL")?)?;
                    return Ok(None);
                }
                "$INCLUDE" | "$GENERATE" => {
                    let message = format!("{directive} is not supported (only $ORIGIN and $TTL)");
                    return Err(Fault::at(0, message));
                }
                d if d.starts_with('$') => {
                    return Err(Fault::at(0, "an unknown directive (only $ORIGIN and $TTL)"));
                }
                _ => match &self.owner {
                    Some((text, name)) if text == first => (name.clone(), true),
                    _ => {
                        let name = self.name(entry, 0)?;
                        self.owner = Some((first.to_string(), name.clone()));
                        (name, false)
                    }
                },
            }
        };
        let mut ttl_here = None;
        let rtype = loop {
            let token = entry.get(i).ok_or("the record has no type")?;
            if token.starts_with(|c: char| c.is_ascii_digit()) && ttl_here.is_none() {
                ttl_here = Some(self::ttl(entry, i)?);
            } else if token.eq_ignore_ascii_case("IN") {
            } else if let Some(class) = ["CH", "HS", "CS", "ANY", "NONE"]
                .iter()
                .find(|c| token.eq_ignore_ascii_case(c))
            {
                return Err(Fault::at(i, format!("class {class}: only IN is served")));
            } else if token
                .get(..5)
                .is_some_and(|p| p.eq_ignore_ascii_case("CLASS"))
            {
                return Err(Fault::at(i, "a class other than IN: only IN is served"));
            } else {
                break i;
            }
            i += 1;
        };
        let data = self.data(entry, rtype)?;
        Ok(Some(Entry {
            line: entry.line,
            owner,
            same_owner,
            ttl: ttl_here.unwrap_or(self.ttl),
            data,
        }))
    }

    /// The data of the record whose type is token `t`; its fields follow it.
    fn data(&self, entry: &Tokens, t: usize) -> Result<Data, Fault> {
        let rtype = entry.get(t).unwrap_or_default();
        let n = entry.len() - t - 1;
        let f = |k: usize| t + 1 + k;
        let count = |name: &str, want: usize| {
            if n == want {
                Ok(())
            } else {
                let s = if want == 1 { "" } else { "s" };
                Err(Fault::at(
                    t,
                    format!("{name} takes {want} field{s}, found {n}"),
                ))
            }
        };
        let text = |k: usize| entry.get(f(k)).unwrap_or_default();
        if rtype.eq_ignore_ascii_case("A") {
            count("A", 1)?;
            let ip = text(0)
                .parse()
                .map_err(|_| Fault::at(f(0), "an IPv4 address was expected"))?;
            Ok(Data::A(ip))
        } else if rtype.eq_ignore_ascii_case("AAAA") {
            count("AAAA", 1)?;
            let ip = text(0)
                .parse()
                .map_err(|_| Fault::at(f(0), "an IPv6 address was expected"))?;
            Ok(Data::Aaaa(ip))
        } else if rtype.eq_ignore_ascii_case("NS") {
            count("NS", 1)?;
            Ok(Data::Ns(self.name(entry, f(0))?))
        } else if rtype.eq_ignore_ascii_case("SOA") {
            count("SOA", 7)?;
            text(2)
                .parse::<u32>()
                .map_err(|_| Fault::at(f(2), "the SOA serial: a number was expected"))?;
            Ok(Data::Soa {
                mname: self.name(entry, f(0))?,
                rname: self.name(entry, f(1))?,
                refresh: ttl(entry, f(3))?,
                retry: ttl(entry, f(4))?,
                expire: ttl(entry, f(5))?,
                minimum: ttl(entry, f(6))?,
            })
        } else {
            // Only a type DNS knows is named: the token may be anything.
            let known = rtype
                .parse::<RecordType>()
                .ok()
                .filter(|t| !matches!(t, RecordType::Unknown(_)));
            let what = known.map_or("an unknown type".to_string(), |t| format!("type {t}"));
            Err(Fault::at(
                t,
                format!(
                    "{what} is not served: privatelink-dns serves A and AAAA records, and SOA and NS at the apex"
                ),
            ))
        }
    }

    /// Token `t` as a name: `@`, relative to the current origin, or absolute. Master
    /// files are ASCII: escapes are read, IDNA is not applied.
    fn name(&self, entry: &Tokens, t: usize) -> Result<Name, Fault> {
        let text = entry.get(t).unwrap_or_default();
        if text == "@" {
            return Ok(self.origin.clone());
        }
        let bad = |_| {
            Fault::at(
                t,
                "a domain name was expected (labels of 1 to 63 bytes, at most 255 in all)",
            )
        };
        let name = Name::from_ascii(text).map_err(bad)?;
        if name.is_fqdn() {
            return Ok(name);
        }
        let mut name = name.append_domain(&self.origin).map_err(bad)?;
        name.set_fqdn(true);
        Ok(name)
    }
}

/// The index of the one argument of a directive (token 0).
fn one(entry: &Tokens, directive: &str) -> Result<usize, Fault> {
    match entry.len() {
        2 => Ok(1),
        _ => Err(Fault::at(0, format!("{directive} takes one argument"))),
    }
}

/// Token `t` as a TTL or SOA timer: seconds, or with units ("1h30m"), at most 2^31 - 1.
fn ttl(entry: &Tokens, t: usize) -> Result<u32, Fault> {
    match parse_ttl(entry.get(t).unwrap_or_default()) {
        Ok(v) if v <= i32::MAX as u32 => Ok(v),
        Ok(_) => Err(Fault::at(
            t,
            "a TTL of at most 2147483647 was expected (RFC 2181 section 8)",
        )),
        Err(_) => Err(Fault::at(
            t,
            "a TTL was expected (seconds, or units: 1h30m)",
        )),
    }
}

/// One entry's tokens: a line, or lines joined by parentheses. Reused from entry to
/// entry: the tokens are ranges of one string.
#[derive(Debug, Default)]
struct Tokens {
    line: usize,
    blank_owner: bool,
    text: String,
    ends: Vec<(usize, usize)>,
    /// Where each token starts: (line, column from 1).
    at: Vec<(usize, usize)>,
}

impl Tokens {
    fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
        self.at.clear();
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn get(&self, i: usize) -> Option<&str> {
        self.ends.get(i).map(|&(a, b)| &self.text[a..b])
    }

    fn push(&mut self, token: &str, at: (usize, usize)) {
        let start = self.text.len();
        self.text.push_str(token);
        self.ends.push((start, self.text.len()));
        self.at.push(at);
    }
}

/// Entries from lines, one line in memory at a time.
struct Lines<R> {
    input: R,
    line: usize,
    buf: Vec<u8>,
}

impl<R: BufRead> Lines<R> {
    /// The next entry into `entry`; false at the end.
    fn next_entry(&mut self, entry: &mut Tokens) -> Result<bool, ReadError> {
        entry.clear();
        let mut depth = 0usize;
        loop {
            self.buf.clear();
            let read = std::io::Read::take(&mut self.input, MAX_LINE + 1)
                .read_until(b'\n', &mut self.buf)
                .map_err(|e| ReadError {
                    line: self.line + 1,
                    column: 1,
                    message: format!("cannot read: {}", e.kind()),
                })?;
            if read == 0 {
                return match depth {
                    0 => Ok(false),
                    _ => Err(ReadError {
                        line: entry.line,
                        column: 1,
                        message: "a parenthesis is not closed".into(),
                    }),
                };
            }
            self.line += 1;
            if read as u64 > MAX_LINE {
                return Err(self.error(1, format!("a line longer than {MAX_LINE} bytes")));
            }
            // A comment may hold any bytes (BIND reads Latin-1 comments too); the
            // rest of the line is UTF-8.
            let code = &self.buf[..code_len(&self.buf)];
            let code = std::str::from_utf8(code).map_err(|e| {
                self.error(
                    e.valid_up_to() + 1,
                    "a byte that is not UTF-8 outside a comment".into(),
                )
            })?;
            if depth == 0 {
                entry.line = self.line;
                entry.blank_owner = code.starts_with([' ', '\t']);
            }
            depth = tokenize(code, self.line, depth, entry)?;
            if entry.text.len() as u64 > MAX_LINE {
                let message =
                    format!("an entry longer than {MAX_LINE} bytes (a parenthesis not closed?)");
                return Err(ReadError {
                    line: entry.line,
                    column: 1,
                    message,
                });
            }
            if depth == 0 && !entry.ends.is_empty() {
                return Ok(true);
            }
        }
    }

    fn error(&self, column: usize, message: String) -> ReadError {
        ReadError {
            line: self.line.max(1),
            column,
            message,
        }
    }
}

/// How many bytes of `line` come before its comment (`;` outside a quoted string,
/// and not escaped by a backslash).
fn code_len(line: &[u8]) -> usize {
    let (mut i, mut quoted) = (0, false);
    while let Some(&b) = line.get(i) {
        match b {
            b'\\' => i += 1,
            b'"' => quoted = !quoted,
            b';' if !quoted => return i,
            _ => {}
        }
        i += 1;
    }
    line.len()
}

/// Splits one line (number `n`, its comment cut off) into `tokens`; returns the
/// parenthesis depth after it. A backslash keeps the next character in the token (the
/// name parser reads the escape); a quoted string is one token. Works on bytes:
/// every delimiter is ASCII, so a token never ends inside a character.
fn tokenize(
    line: &str,
    n: usize,
    mut depth: usize,
    tokens: &mut Tokens,
) -> Result<usize, ReadError> {
    let bytes = line.as_bytes();
    let fail = |i: usize, message: &str| ReadError {
        line: n,
        column: i + 1,
        message: message.into(),
    };
    // Past a backslash at `i`: the escaped character too.
    let escaped = |i: usize| i + 1 + line[i + 1..].chars().next().map_or(0, char::len_utf8);
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b';' => break,
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'(' => {
                depth += 1;
                i += 1;
            }
            b')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| fail(i, "a `)` without its `(`"))?;
                i += 1;
            }
            b'"' => {
                let mut j = i + 1;
                loop {
                    match bytes.get(j) {
                        None => return Err(fail(i, "a quoted string does not end on its line")),
                        Some(b'"') => break,
                        Some(b'\\') => j = escaped(j),
                        Some(_) => j += 1,
                    }
                }
                tokens.push(&line[i + 1..j.min(line.len())], (n, i + 1));
                i = j + 1;
            }
            _ => {
                let mut j = i;
                while let Some(&c) = bytes.get(j) {
                    match c {
                        b'\\' => j = escaped(j),
                        b' ' | b'\t' | b'\r' | b'\n' | b'(' | b')' | b';' | b'"' => break,
                        _ => j += 1,
                    }
                }
                tokens.push(&line[i..j.min(line.len())], (n, i + 1));
                i = j;
            }
        }
    }
    Ok(depth)
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

#[cfg(test)]
mod read_tests {
    use super::*;

    fn origin() -> Name {
        Name::from_ascii("example.com.").unwrap()
    }

    fn all(text: &str) -> Result<Vec<Entry>, ReadError> {
        let mut out = Vec::new();
        read(text.as_bytes(), &origin(), 300, |e| {
            out.push(e);
            Ok(())
        })?;
        Ok(out)
    }

    fn err(text: &str) -> ReadError {
        all(text).expect_err(text)
    }

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn reads_what_is_served() {
        let text = "; a comment\n\
            $TTL 1h\n\
            @ 3600 IN SOA ns1 hostmaster.example.com. ( 2024010101 ; serial\n\
            \t1h 15m 2w 60 )\n\
            @ IN NS ns1\n\
            ns1 60 IN A 10.0.0.53\n\
            api A 10.0.0.1\n\
            \tA 10.0.0.2 ; same owner\n\
            api.example.com. IN 30 AAAA fd00::1\n\
            $ORIGIN sub.example.com.\n\
            *\tA 10.9.9.9\n";
        let got = all(text).unwrap();
        let summary: Vec<_> = got
            .iter()
            .map(|e| (e.line, e.owner.to_string(), e.ttl))
            .collect();
        assert_eq!(
            summary,
            [
                (3, "example.com.".into(), 3600),
                (5, "example.com.".into(), 3600),
                (6, "ns1.example.com.".into(), 60),
                (7, "api.example.com.".into(), 3600),
                (8, "api.example.com.".into(), 3600),
                (9, "api.example.com.".into(), 30),
                (11, "*.sub.example.com.".into(), 3600),
            ]
        );
        assert_eq!(
            got[0].data,
            Data::Soa {
                mname: n("ns1.example.com."),
                rname: n("hostmaster.example.com."),
                refresh: 3600,
                retry: 900,
                expire: 1_209_600,
                minimum: 60
            }
        );
        assert_eq!(got[1].data, Data::Ns(n("ns1.example.com.")));
        assert_eq!(got[3].data, Data::A("10.0.0.1".parse().unwrap()));
        assert_eq!(got[5].data, Data::Aaaa("fd00::1".parse().unwrap()));
    }

    #[test]
    fn a_record_without_ttl_takes_the_default_until_a_ttl_directive() {
        let got = all("a A 10.0.0.1\n$TTL 42\nb A 10.0.0.2\n").unwrap();
        assert_eq!(got[0].ttl, 300);
        assert_eq!(got[1].ttl, 42);
    }

    #[test]
    fn escapes_and_quotes_stay_in_their_token() {
        let got = all("a\\.b A 10.0.0.1\n").unwrap();
        assert_eq!(got[0].owner.num_labels(), 3);
        assert_eq!(got[0].owner.to_ascii(), "a\\.b.example.com.");
        // A quoted `;` or `(` is not a comment or a group: the line fails on its type.
        let e = err("x TXT \"a ; ( b\"\ny A 10.0.0.1\n");
        assert_eq!(e.line, 1);
        assert!(e.message.contains("type TXT is not served"), "{e}");
    }

    #[test]
    fn every_error_names_its_line() {
        // (text, line, column, message)
        let cases: &[(&str, usize, usize, &str)] = &[
            (
                "a A 10.0.0.1\nb CNAME a\n",
                2,
                3,
                "type CNAME is not served",
            ),
            ("a A 10.0.0.256\n", 1, 5, "an IPv4 address was expected"),
            ("a AAAA 10.0.0.1\n", 1, 8, "an IPv6 address was expected"),
            ("a A 10.0.0.1 10.0.0.2\n", 1, 3, "A takes 1 field, found 2"),
            ("\n\na CH A 10.0.0.1\n", 3, 3, "class CH: only IN is served"),
            ("a CLASS3 A 10.0.0.1\n", 1, 3, "a class other than IN"),
            ("$INCLUDE other.zone\n", 1, 1, "$INCLUDE is not supported"),
            (
                "$GENERATE 1-9 x$ A 10.0.0.$\n",
                1,
                1,
                "$GENERATE is not supported",
            ),
            ("$FOO bar\n", 1, 1, "an unknown directive"),
            ("$TTL\n", 1, 1, "$TTL takes one argument"),
            ("$TTL 9999999999\n", 1, 6, "a TTL was expected"),
            ("a 4294967295 A 10.0.0.1\n", 1, 3, "at most 2147483647"),
            (
                "\tA 10.0.0.1\n",
                1,
                1,
                "blank owner needs a record before it",
            ),
            ("a\n", 1, 1, "the record has no type"),
            (
                "@ SOA a b ( 1 2 3\n 4 5\n",
                1,
                1,
                "a parenthesis is not closed",
            ),
            ("a A 10.0.0.1 )\n", 1, 14, "a `)` without its `(`"),
            ("a TXT \"open\n", 1, 7, "quoted string does not end"),
            (
                "@ SOA a b serial 1 2 3 4\n",
                1,
                11,
                "the SOA serial: a number was expected",
            ),
            ("@ SOA a b 1 2 3 4\n", 1, 3, "SOA takes 7 fields, found 6"),
            ("a..b A 10.0.0.1\n", 1, 1, "a domain name was expected"),
            // A field on the second line of a parenthesised entry: that line and column.
            ("@ SOA a b ( 1\n  2 x 4 5 )\n", 2, 5, "a TTL was expected"),
        ];
        for (text, line, column, message) in cases {
            let e = err(text);
            assert_eq!((e.line, e.column), (*line, *column), "{text:?}: {e}");
            assert!(e.message.contains(message), "{text:?}: {e}");
        }
    }

    #[test]
    fn no_message_quotes_the_file() {
        // What a file given by mistake holds (the environment, a TSIG secret): no
        // error shows any of it, whichever way it fails.
        let secret = "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMIK7MDENGbPxRfiCYzEXAMPLE";
        let texts = [
            format!("{secret}\n"),
            format!("PATH=/usr/bin\0{secret}\0HOME=/root\n"),
            format!("a A {secret}\n"),
            format!("a {secret} 10.0.0.1\n"),
            format!("a 60 {secret}\n"),
            format!("$TTL {secret}\n"),
            format!("$ORIGIN {secret}..\n"),
            format!("${secret}\n"),
            format!("@ SOA a b {secret} 1 2 3 4\n"),
            "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=\n".to_string(),
            "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI= A 10.0.0.1\n".to_string(),
        ];
        for text in &texts {
            let e = read(text.as_bytes(), &origin(), 60, |e| {
                // As the config does with a name outside the zone.
                Err(format!("{} is outside its zone", shown(&e.owner)))
            })
            .unwrap_err()
            .to_string();
            assert!(!e.contains("wJalrXUtnFEMI"), "{text:?}: {e}");
            assert!(!e.contains("c2VjcmV0"), "{text:?}: {e}");
        }
        // A plain host name is shown; one with other characters is not.
        assert_eq!(shown(&n("api.example.com.")), "api.example.com.");
        let odd = Name::from_labels([&b"a=b c"[..], b"example", b"com"]).unwrap();
        assert!(shown(&odd).contains("not shown"));
    }

    #[test]
    fn a_comment_may_hold_any_bytes() {
        // Latin-1 in a comment, as BIND reads it; a `;` in quotes is no comment.
        let mut bytes = b"a A 10.0.0.1 ; caf\xe9 \xff\xfe\n".to_vec();
        bytes.extend_from_slice(b"; \xe9t\xe9\nb A 10.0.0.2\n");
        let got = {
            let mut out = Vec::new();
            read(&bytes[..], &origin(), 60, |e| {
                out.push(e.owner.to_string());
                Ok(())
            })
            .unwrap();
            out
        };
        assert_eq!(got, ["a.example.com.", "b.example.com."]);
    }

    #[test]
    fn a_message_from_the_caller_names_the_line() {
        let e = read(
            "a A 10.0.0.1\nb A 10.0.0.2\n".as_bytes(),
            &origin(),
            60,
            |e| {
                if e.owner.to_ascii().starts_with('b') {
                    Err("no b".into())
                } else {
                    Ok(())
                }
            },
        )
        .unwrap_err();
        assert_eq!((e.line, e.message.as_str()), (2, "no b"));
    }

    #[test]
    fn a_line_without_end_is_bounded() {
        let text = "a".repeat(MAX_LINE as usize + 10);
        let e = err(&text);
        assert!(e.message.contains("longer than"), "{e}");
        let bytes = [b'\n', b'a', b' ', b'A', b' ', 0xff, b'\n'];
        let e = read(&bytes[..], &origin(), 60, |_| Ok(())).unwrap_err();
        assert_eq!((e.line, e.column), (2, 5), "{e}");
        assert!(e.message.contains("not UTF-8 outside a comment"), "{e}");
        // An entry that never closes its parenthesis stops at the same bound.
        let open = format!("@ SOA a b (\n{}", "1 2 3\n".repeat(30_000));
        let e = err(&open);
        assert_eq!(e.line, 1, "{e}");
        assert!(e.message.contains("parenthesis not closed"), "{e}");
    }
}
