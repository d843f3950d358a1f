//! Graph enumerations used by policies and sign-ins, each with its spelling table.
//!
//! Input is matched case-insensitively (`All`/`all`, `InternalGuest`); output always uses the
//! Graph spelling in the tables below.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyState {
    Enabled,
    Disabled,
    /// `enabledForReportingButNotEnforced`: evaluated and logged, never enforced.
    ReportOnly,
}

pub const POLICY_STATES: &[(&str, PolicyState)] = &[
    ("enabled", PolicyState::Enabled),
    ("disabled", PolicyState::Disabled),
    ("enabledForReportingButNotEnforced", PolicyState::ReportOnly),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientAppType {
    All,
    Browser,
    MobileAppsAndDesktopClients,
    ExchangeActiveSync,
    EasSupported,
    Other,
}

pub const CLIENT_APP_TYPES: &[(&str, ClientAppType)] = &[
    ("all", ClientAppType::All),
    ("browser", ClientAppType::Browser),
    ("mobileAppsAndDesktopClients", ClientAppType::MobileAppsAndDesktopClients),
    ("exchangeActiveSync", ClientAppType::ExchangeActiveSync),
    ("easSupported", ClientAppType::EasSupported),
    // Microsoft folded `easUnsupported` into `exchangeActiveSync`.
    ("easUnsupported", ClientAppType::ExchangeActiveSync),
    ("other", ClientAppType::Other),
];

impl ClientAppType {
    /// Whether a policy listing `self` covers a sign-in from `client`.
    pub fn covers(self, client: ClientAppType) -> bool {
        use ClientAppType::*;
        match (self, client) {
            (All, _) => true,
            (ExchangeActiveSync | EasSupported, ExchangeActiveSync | EasSupported) => true,
            (a, b) => a == b,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    All,
    Android,
    IOS,
    Windows,
    WindowsPhone,
    MacOS,
    Linux,
    /// A platform Entra does not know; reached by "include all, exclude the known ones".
    Unknown,
}

pub const PLATFORMS: &[(&str, Platform)] = &[
    ("all", Platform::All),
    ("android", Platform::Android),
    ("iOS", Platform::IOS),
    ("windows", Platform::Windows),
    ("windowsPhone", Platform::WindowsPhone),
    ("macOS", Platform::MacOS),
    ("linux", Platform::Linux),
    ("unknownFutureValue", Platform::Unknown),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RiskLevel {
    None,
    Low,
    Medium,
    High,
    Hidden,
    UnknownFutureValue,
}

pub const RISK_LEVELS: &[(&str, RiskLevel)] = &[
    ("low", RiskLevel::Low),
    ("medium", RiskLevel::Medium),
    ("high", RiskLevel::High),
    ("hidden", RiskLevel::Hidden),
    ("none", RiskLevel::None),
    ("unknownFutureValue", RiskLevel::UnknownFutureValue),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InsiderRiskLevel {
    None,
    Minor,
    Moderate,
    Elevated,
}

pub const INSIDER_RISK_LEVELS: &[(&str, InsiderRiskLevel)] = &[
    ("none", InsiderRiskLevel::None),
    ("minor", InsiderRiskLevel::Minor),
    ("moderate", InsiderRiskLevel::Moderate),
    ("elevated", InsiderRiskLevel::Elevated),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransferMethod {
    None,
    DeviceCodeFlow,
    AuthenticationTransfer,
}

pub const TRANSFER_METHODS: &[(&str, TransferMethod)] = &[
    ("none", TransferMethod::None),
    ("deviceCodeFlow", TransferMethod::DeviceCodeFlow),
    ("authenticationTransfer", TransferMethod::AuthenticationTransfer),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UserAction {
    RegisterSecurityInfo,
    RegisterOrJoinDevices,
}

/// Policy spellings (`urn:user:…`) and the What-If request spellings map to the same actions.
pub const USER_ACTIONS: &[(&str, UserAction)] = &[
    ("urn:user:registersecurityinfo", UserAction::RegisterSecurityInfo),
    ("urn:user:registerdevice", UserAction::RegisterOrJoinDevices),
    ("registerSecurityInformation", UserAction::RegisterSecurityInfo),
    ("registerOrJoinDevices", UserAction::RegisterOrJoinDevices),
];

impl UserAction {
    pub fn urn(self) -> &'static str {
        match self {
            UserAction::RegisterSecurityInfo => "urn:user:registersecurityinfo",
            UserAction::RegisterOrJoinDevices => "urn:user:registerdevice",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilterMode {
    Include,
    Exclude,
}

pub const FILTER_MODES: &[(&str, FilterMode)] =
    &[("include", FilterMode::Include), ("exclude", FilterMode::Exclude)];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrantOperator {
    And,
    Or,
}

pub const GRANT_OPERATORS: &[(&str, GrantOperator)] =
    &[("AND", GrantOperator::And), ("OR", GrantOperator::Or)];

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BuiltInControl {
    Block,
    Mfa,
    CompliantDevice,
    DomainJoinedDevice,
    ApprovedApplication,
    CompliantApplication,
    PasswordChange,
    RiskRemediation,
    CompliantNetwork,
    /// A control this engine does not know; it can never be satisfied (fails closed).
    Other(String),
}

impl BuiltInControl {
    pub fn parse(raw: &str) -> Self {
        use BuiltInControl::*;
        let known = [
            ("block", Block),
            ("mfa", Mfa),
            ("compliantDevice", CompliantDevice),
            ("domainJoinedDevice", DomainJoinedDevice),
            ("approvedApplication", ApprovedApplication),
            ("compliantApplication", CompliantApplication),
            ("passwordChange", PasswordChange),
            ("riskRemediation", RiskRemediation),
            ("compliantNetwork", CompliantNetwork),
        ];
        known
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(raw.trim()))
            .map(|(_, c)| c)
            .unwrap_or_else(|| Other(raw.trim().to_owned()))
    }

    pub fn graph_name(&self) -> &str {
        use BuiltInControl::*;
        match self {
            Block => "block",
            Mfa => "mfa",
            CompliantDevice => "compliantDevice",
            DomainJoinedDevice => "domainJoinedDevice",
            ApprovedApplication => "approvedApplication",
            CompliantApplication => "compliantApplication",
            PasswordChange => "passwordChange",
            RiskRemediation => "riskRemediation",
            CompliantNetwork => "compliantNetwork",
            Other(s) => s,
        }
    }
}

/// The kinds of guest and external user Conditional Access distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GuestType {
    InternalGuest,
    B2bCollaborationGuest,
    B2bCollaborationMember,
    B2bDirectConnectUser,
    OtherExternalUser,
    ServiceProvider,
}

pub const GUEST_TYPES: &[(&str, Option<GuestType>)] = &[
    ("none", None),
    ("internalGuest", Some(GuestType::InternalGuest)),
    ("b2bCollaborationGuest", Some(GuestType::B2bCollaborationGuest)),
    ("b2bCollaborationMember", Some(GuestType::B2bCollaborationMember)),
    ("b2bDirectConnectUser", Some(GuestType::B2bDirectConnectUser)),
    ("otherExternalUser", Some(GuestType::OtherExternalUser)),
    ("serviceProvider", Some(GuestType::ServiceProvider)),
    ("unknownFutureValue", None),
];

impl GuestType {
    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of guest types (six bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct GuestTypes(u8);

impl GuestTypes {
    pub const NONE: GuestTypes = GuestTypes(0);
    pub const ALL: GuestTypes = GuestTypes(0b11_1111);

    pub fn with(self, t: Option<GuestType>) -> Self {
        match t {
            Some(t) => GuestTypes(self.0 | t.bit()),
            None => self,
        }
    }

    pub fn contains(self, t: GuestType) -> bool {
        self.0 & t.bit() != 0
    }
}

/// Authentication method modes: the building blocks of authentication-strength combinations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MethodMode {
    Password,
    Voice,
    HardwareOath,
    SoftwareOath,
    Sms,
    Fido2,
    WindowsHelloForBusiness,
    MicrosoftAuthenticatorPush,
    DeviceBasedPush,
    TemporaryAccessPassOneTime,
    TemporaryAccessPassMultiUse,
    Email,
    X509CertificateSingleFactor,
    X509CertificateMultiFactor,
    FederatedSingleFactor,
    FederatedMultiFactor,
    QrCodePin,
}

pub const METHOD_MODES: &[(&str, MethodMode)] = &[
    ("password", MethodMode::Password),
    ("voice", MethodMode::Voice),
    ("hardwareOath", MethodMode::HardwareOath),
    ("softwareOath", MethodMode::SoftwareOath),
    ("sms", MethodMode::Sms),
    ("fido2", MethodMode::Fido2),
    ("windowsHelloForBusiness", MethodMode::WindowsHelloForBusiness),
    ("microsoftAuthenticatorPush", MethodMode::MicrosoftAuthenticatorPush),
    ("deviceBasedPush", MethodMode::DeviceBasedPush),
    ("temporaryAccessPassOneTime", MethodMode::TemporaryAccessPassOneTime),
    ("temporaryAccessPassMultiUse", MethodMode::TemporaryAccessPassMultiUse),
    ("email", MethodMode::Email),
    ("x509CertificateSingleFactor", MethodMode::X509CertificateSingleFactor),
    ("x509CertificateMultiFactor", MethodMode::X509CertificateMultiFactor),
    ("federatedSingleFactor", MethodMode::FederatedSingleFactor),
    ("federatedMultiFactor", MethodMode::FederatedMultiFactor),
    ("qrCodePin", MethodMode::QrCodePin),
];

impl MethodMode {
    pub fn bit(self) -> u32 {
        1 << (self as u32)
    }

    pub fn graph_name(self) -> &'static str {
        METHOD_MODES
            .iter()
            .find(|(_, m)| *m == self)
            .map(|(n, _)| *n)
            .unwrap_or("unknownFutureValue")
    }
}

/// The methods used in a sign-in so far, as a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MethodSet(pub u32);

impl MethodSet {
    pub fn of(modes: &[MethodMode]) -> Self {
        MethodSet(modes.iter().fold(0, |acc, m| acc | m.bit()))
    }

    pub fn with(self, m: MethodMode) -> Self {
        MethodSet(self.0 | m.bit())
    }

    pub fn contains_all(self, other: MethodSet) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}
