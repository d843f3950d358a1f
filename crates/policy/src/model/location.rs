//! Named locations: IP ranges (trusted or not), countries, and Global Secure Access networks.

use ipnet::IpNet;
use serde_json::{Map, Value};

use crate::json::{FieldError, FieldResult, Obj};

#[derive(Debug, Clone, PartialEq)]
pub struct NamedLocation {
    pub id: String,
    pub display_name: String,
    pub kind: LocationKind,
    pub raw: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LocationKind {
    Ip {
        ranges: Vec<IpNet>,
        trusted: bool,
    },
    /// Upper-case ISO 3166 alpha-2 codes. GPS lookup is treated like IP lookup: the sign-in's
    /// country is whatever the caller resolved.
    Country {
        countries: Vec<String>,
        include_unknown: bool,
    },
    /// A Global Secure Access compliant network; Gatehouse has none, so it never matches.
    CompliantNetwork,
}

impl NamedLocation {
    pub fn is_trusted(&self) -> bool {
        matches!(self.kind, LocationKind::Ip { trusted: true, .. })
    }
}

/// Which kind of named location an object is, from `@odata.type` or, for hand-written files
/// without it, from its fields (`locationType`, `ipRanges`, `countriesAndRegions`).
pub fn location_kind_of(type_name: Option<&str>, obj: &Map<String, Value>) -> Option<&'static str> {
    let declared = type_name.map(str::to_owned).or_else(|| {
        obj.get("locationType").and_then(Value::as_str).map(|s| s.to_ascii_lowercase())
    });
    match declared.as_deref() {
        Some("ipnamedlocation") => Some("ip"),
        Some("countrynamedlocation") => Some("country"),
        Some("compliantnetworknamedlocation") => Some("compliantNetwork"),
        Some(_) => None,
        None if obj.contains_key("ipRanges") => Some("ip"),
        None if obj.contains_key("countriesAndRegions") => Some("country"),
        None if obj.contains_key("compliantNetworkType") => Some("compliantNetwork"),
        None => None,
    }
}

pub fn parse_named_location(o: Obj<'_>, kind: &str, id: String) -> FieldResult<NamedLocation> {
    let display_name = o.string("displayName")?.unwrap_or_default().to_owned();
    let kind = match kind {
        "ip" => {
            let ranges_path = o.path.key("ipRanges");
            let mut ranges = Vec::new();
            for (range, path) in o.objects("ipRanges")? {
                let r = Obj { map: range, path: &path };
                let cidr = r.required_string("cidrAddress")?;
                ranges.push(parse_cidr(cidr, &path.key("cidrAddress"))?);
            }
            if ranges.is_empty() {
                return Err(FieldError::new(
                    &ranges_path,
                    "an IP named location needs at least one range",
                ));
            }
            if ranges.len() > 2000 {
                return Err(FieldError::new(
                    &ranges_path,
                    "at most 2000 IP ranges per named location",
                ));
            }
            LocationKind::Ip { ranges, trusted: o.bool("isTrusted")?.unwrap_or(false) }
        }
        "country" => {
            let path = o.path.key("countriesAndRegions");
            let mut countries = Vec::new();
            for (i, c) in o.strings("countriesAndRegions")?.into_iter().enumerate() {
                let c = c.trim();
                if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_alphabetic()) {
                    return Err(FieldError::new(
                        &path.index(i),
                        format!("`{c}` is not a two-letter ISO 3166 country code"),
                    ));
                }
                countries.push(c.to_ascii_uppercase());
            }
            LocationKind::Country {
                countries,
                include_unknown: o.bool("includeUnknownCountriesAndRegions")?.unwrap_or(false),
            }
        }
        _ => LocationKind::CompliantNetwork,
    };
    let mut raw = o.map.clone();
    if !raw.contains_key("id") {
        raw.insert("id".into(), Value::String(id.clone()));
    }
    Ok(NamedLocation { id, display_name, kind, raw })
}

/// Entra accepts CIDR ranges with a prefix longer than /8, IPv4 or IPv6.
pub fn parse_cidr(cidr: &str, path: &crate::json::JsonPath) -> FieldResult<IpNet> {
    let net: IpNet = cidr.trim().parse().map_err(|_| {
        FieldError::new(path, format!("`{cidr}` is not an IPv4 or IPv6 range in CIDR notation"))
    })?;
    // Checked after an IPv4-mapped range becomes the IPv4 range it is: `::ffff:0:0/96` is
    // `0.0.0.0/0`, every IPv4 address.
    let net = canonical_net(net.trunc());
    if net.prefix_len() <= 8 {
        return Err(FieldError::new(
            path,
            format!("`{cidr}` is too wide: the prefix must be longer than /8"),
        ));
    }
    Ok(net)
}

/// `::ffff:a.b.c.d/n` (n ≥ 96) is the IPv4 range `a.b.c.d/(n-96)`: the same hosts.
pub fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map(IpNet::V4).unwrap_or(net),
            None => net,
        },
        other => other,
    }
}
