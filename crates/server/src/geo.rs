//! Country lookup from a MaxMind-format database (GeoLite2-Country, DB-IP), read once at start.

use std::net::IpAddr;
use std::path::Path;

use maxminddb::{Reader, path};

pub struct Geo {
    reader: Reader<Vec<u8>>,
}

impl Geo {
    pub fn open(file: &Path) -> Result<Geo, String> {
        let reader = Reader::open_readfile(file)
            .map_err(|e| format!("cannot open GeoIP database {}: {e}", file.display()))?;
        Ok(Geo { reader })
    }

    /// A database held in memory (the demo's, built into the binary).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Geo, String> {
        let reader = Reader::from_source(bytes).map_err(|e| format!("bad GeoIP database: {e}"))?;
        Ok(Geo { reader })
    }

    /// The ISO 3166 alpha-2 code of the address's country; `None` when the database does not
    /// place it (Conditional Access then treats it as an unknown country).
    pub fn country(&self, ip: IpAddr) -> Option<String> {
        let found = self.reader.lookup(canonical(ip)).ok()?;
        let code: Option<&str> = found.decode_path(&path!["country", "iso_code"]).ok()?;
        code.map(str::to_ascii_uppercase)
    }
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is the IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
