//! Fuzzes the device-filter rule language: `DeviceFilterRule::parse`, then `matches` on an
//! unregistered device (every property null) and on populated devices.
//!
//! Besides "never panics", it checks a few properties the module documents:
//! - `source()` is the rule text as given;
//! - an error's character offset lies within the rule (or is the length limit);
//! - `-not ( rule )`, when it parses, matches exactly where `rule` does not.
#![no_main]

use gatehouse_policy::device_filter::{DeviceAttributes, DeviceFilterRule, MAX_RULE_CHARS};
use libfuzzer_sys::fuzz_target;

/// A registered, hybrid-joined, compliant corporate Windows device.
fn windows() -> DeviceAttributes {
    let mut extension_attributes: [Option<String>; 15] = Default::default();
    extension_attributes[0] = Some("SAW".to_owned());
    extension_attributes[6] = Some(String::new());
    extension_attributes[14] = Some("Tier0".to_owned());
    DeviceAttributes {
        device_id: Some("AAAAAAAA-0000-1111-2222-BBBBBBBBBBBB".to_owned()),
        display_name: Some("CONTOSO-Laptop-042".to_owned()),
        enrollment_profile_name: Some("Autopilot Corp".to_owned()),
        manufacturer: Some("Microsoft Corporation".to_owned()),
        model: Some("Surface Laptop 5".to_owned()),
        operating_system: Some("Windows".to_owned()),
        operating_system_version: Some("10.0.22631".to_owned()),
        extension_attributes,
        device_ownership: Some("Company".to_owned()),
        is_compliant: Some(true),
        mdm_app_id: Some("0000000a-0000-0000-c000-000000000000".to_owned()),
        physical_ids: Some(vec!["[ZTDId]:abc".to_owned(), "[OrderId]:Order-7".to_owned()]),
        system_labels: Some(vec!["AzureResource".to_owned()]),
        profile_type: Some("RegisteredDevice".to_owned()),
        trust_type: Some("ServerAD".to_owned()),
    }
}

/// A personal device with awkward values: non-ASCII text, empty strings and collections.
fn odd() -> DeviceAttributes {
    let mut extension_attributes: [Option<String>; 15] = Default::default();
    for (i, slot) in extension_attributes.iter_mut().enumerate() {
        *slot = Some(format!("Ä{i}ß\u{0130}"));
    }
    DeviceAttributes {
        device_id: Some(String::new()),
        display_name: Some("İstanbul-Ärzte-ÿ-\u{1F600}".to_owned()),
        enrollment_profile_name: Some(" ".to_owned()),
        manufacturer: Some("ＡＢＣ".to_owned()),
        model: Some("a\\b\"c'd".to_owned()),
        operating_system: Some("iOS".to_owned()),
        operating_system_version: Some("17.4.1".to_owned()),
        extension_attributes,
        device_ownership: Some("Personal".to_owned()),
        is_compliant: Some(false),
        mdm_app_id: None,
        physical_ids: Some(Vec::new()),
        system_labels: Some(vec![String::new(), "ÄÖÜ".to_owned()]),
        profile_type: Some("Printer".to_owned()),
        trust_type: Some("Workplace".to_owned()),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let chars = text.chars().count();
    let rule = match DeviceFilterRule::parse(text) {
        Ok(rule) => rule,
        Err(e) => {
            assert!(
                e.offset <= chars.max(MAX_RULE_CHARS),
                "error offset {} beyond the rule ({chars} chars): {e}",
                e.offset
            );
            let _ = e.to_string();
            return;
        }
    };
    assert_eq!(rule.source(), text);
    let devices = [DeviceAttributes::default(), windows(), odd()];
    let results: Vec<bool> = devices.iter().map(|d| rule.matches(d)).collect();

    let negated = format!("-not ( {text} )");
    if let Ok(not_rule) = DeviceFilterRule::parse(&negated) {
        for (d, r) in devices.iter().zip(&results) {
            assert_eq!(not_rule.matches(d), !r, "-not ( rule ) must invert rule");
        }
    }
});
