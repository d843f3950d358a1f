#!/usr/bin/env bash
# Builds the seed corpora for the fuzz targets in fuzz/corpus/<target>/ (git-ignored).
#
#   fuzz/seed.sh            # seeds from ../shared (next to the repository)
#   SHARED=/path/to/shared fuzz/seed.sh
#
# Safe to re-run: it only adds files (named by content hash), never deletes what the fuzzer
# has found. Needs bash, python3 and coreutils.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
shared="${SHARED:-$(cd "$here/../.." && pwd)/shared}"
policies="$shared/corpus/ca-policies"
travel="$shared/scenarios/travel"
for d in "$policies" "$travel/tenant"; do
  [[ -d "$d" ]] || { echo "seed.sh: $d not found (set SHARED=...)" >&2; exit 1; }
done

corpus="$here/corpus"
mkdir -p "$corpus"/{load_tenant,device_filter,whatif_request}

python3 - "$policies" "$travel" "$corpus" <<'PY'
import hashlib, json, os, sys

policies, travel, corpus = sys.argv[1:4]
SEP = b"\n--8<--\n"          # the document separator of the load_tenant target
MAX_LEN = 65536              # the -max_len the README uses
counts = {}

def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    if len(data) > MAX_LEN:
        return
    name = hashlib.sha1(data).hexdigest()
    path = os.path.join(corpus, target, name)
    if not os.path.exists(path):
        with open(path, "wb") as f:
            f.write(data)
        counts[target] = counts.get(target, 0) + 1

def json_files(root):
    for d, _, fs in sorted(os.walk(root)):
        for f in sorted(fs):
            if f.endswith(".json"):
                yield os.path.join(d, f)

def read(path):
    with open(path, "rb") as f:
        return f.read()

def text(raw):
    for enc in ("utf-8-sig", "utf-16"):
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            pass
    return None

def rules(value, out):
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "rule" and isinstance(v, str):
                out.add(v)
            rules(v, out)
    elif isinstance(value, list):
        for v in value:
            rules(v, out)

# --- load_tenant: every document alone, whole tenants, a directory plus each policy ---------
tenant_dir = os.path.join(travel, "tenant")
travel_docs = [read(p) for p in json_files(tenant_dir)]
directory = [read(os.path.join(tenant_dir, n)) for n in ("users.json", "groups.json", "namedLocations.json")
             if os.path.exists(os.path.join(tenant_dir, n))]
put("load_tenant", SEP.join(travel_docs))
corpus_docs = list(json_files(policies))
for p in corpus_docs + list(json_files(tenant_dir)):
    raw = read(p)
    put("load_tenant", raw)
    if p.startswith(policies):
        put("load_tenant", SEP.join(directory + [raw]))
# Each published set as one tenant (what `gatehouse` loads from a folder), when it fits.
for s in sorted(os.listdir(policies)):
    d = os.path.join(policies, s)
    if os.path.isdir(d):
        put("load_tenant", SEP.join(read(p) for p in json_files(d)))
# The encodings the decoder accepts: BOM'd UTF-8, UTF-16 LE/BE with and without BOM.
docs = [d.decode() for d in travel_docs[:2]]
put("load_tenant", SEP.join(b"\xef\xbb\xbf" + d.encode() for d in docs))
put("load_tenant", SEP.join(b"\xff\xfe" + d.encode("utf-16-le") for d in docs))
put("load_tenant", SEP.join(d.encode("utf-16-le") for d in docs))
put("load_tenant", SEP.join(d.encode("utf-16-be") for d in docs))

# --- device_filter: every rule in the shared data, plus every property and operator ---------
found = set()
for p in corpus_docs + list(json_files(tenant_dir)):
    t = text(read(p))
    try:
        rules(json.loads(t), found)
    except (TypeError, ValueError):
        pass
handwritten = [
    'device.trustType -eq "ServerAD"',
    'device.isCompliant -eq True -and device.deviceOwnership -eq "Company"',
    'device.isCompliant -ne true -or device.trustType -ne \'AzureAD\'',
    'device.displayName -startsWith "CONTOSO-" -and device.displayName -notEndsWith "-kiosk"',
    'device.model -contains "Surface" -or device.manufacturer -notContains "Micro"',
    'device.operatingSystem -eq "Windows" -and device.operatingSystemVersion -notStartsWith "10.0.1"',
    'device.enrollmentProfileName -endsWith "Corp" -or device.enrollmentProfileName -eq null',
    'device.deviceId -in ["aaaaaaaa-0000-1111-2222-bbbbbbbbbbbb", "x"] -or device.mdmAppId -notIn []',
    'device.extensionAttribute1 -eq "SAW" -or device.extensionAttribute15 -ne null',
    'device.physicalIds -contains "[ZTDId]:abc" -and device.systemLabels -notContains "AzureResource"',
    'device.devicePhysicalIds -contains "[OrderId]:Order-7"',
    'device.profileType -eq "RegisteredDevice" -and -not (device.trustType -eq "Workplace")',
    'not (device.isCompliant eq true) or (device.model contains "a\\"b" and device.model -eq \'c\\\\d\')',
    '((device.isCompliant -eq "false")) -and -not -not device.displayName -ne ""',
    'DEVICE.TRUSTTYPE -EQ "serverad" -OR Device.ExtensionAttribute7 -startsWith "Ä"',
]
for r in sorted(found) + handwritten:
    put("device_filter", r)

# --- whatif_request: the travel scenario's requests, plus every identity and context kind ----
cases = os.path.join(travel, "cases.jsonl")
if os.path.exists(cases):
    with open(cases, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                case = json.loads(line)
                if "request" in case:
                    put("whatif_request", json.dumps(case["request"], indent=2))
user = {"@odata.type": "#microsoft.graph.userSignIn", "userId": "a0000000-0000-4000-8000-000000000001"}
apps = {"@odata.type": "#microsoft.graph.applicationContext", "includeApplications": ["00000003-0000-0ff1-ce00-000000000000"]}
device = {"deviceId": "AAAAAAAA-0000-1111-2222-BBBBBBBBBBBB", "displayName": "CONTOSO-Laptop-042",
          "operatingSystem": "Windows", "operatingSystemVersion": "10.0.22631", "model": "Surface Laptop 5",
          "manufacturer": "Microsoft Corporation", "enrollmentProfileName": "Autopilot Corp",
          "extensionAttribute1": "SAW", "ownership": "Company", "isCompliant": True, "trustType": "ServerAD",
          "profileType": "RegisteredDevice", "mdmAppId": "0000000a-0000-0000-c000-000000000000",
          "physicalIds": ["[ZTDId]:abc"], "systemLabels": ["AzureResource"]}
requests = [
    {"signInIdentity": user, "signInContext": apps, "signInConditions": {}},
    {"signInIdentity": user, "signInContext": apps, "signInConditions": None, "appliedPoliciesOnly": True},
    {"signInIdentity": {"@odata.type": "#microsoft.graph.userSignIn", "userId": "a0000000-0000-4000-8000-000000000006",
                        "externalTenantId": "11111111-0000-4000-8000-000000000001", "externalUserType": "b2bCollaborationGuest"},
     "signInContext": {"@odata.type": "#microsoft.graph.applicationContext", "includeApplications": ["00000002-0000-0ff1-ce00-000000000000", "Office365"]},
     "signInConditions": {"devicePlatform": "iOS", "clientAppType": "mobileAppsAndDesktopClients", "deviceInfo": {}}},
    {"signInIdentity": {"@odata.type": "#microsoft.graph.servicePrincipalSignIn", "servicePrincipalId": "f0000000-0000-4000-8000-000000000001"},
     "signInContext": apps, "signInConditions": {"servicePrincipalRiskLevel": "high", "ipAddress": "2001:db8::1"}},
    {"signInIdentity": {"userId": "a0000000-0000-4000-8000-000000000002"},
     "signInContext": {"@odata.type": "#microsoft.graph.userActionContext", "userAction": "registerSecurityInformation"},
     "signInConditions": {"country": "fr", "ipAddress": "10.0.2.3", "clientAppType": "exchangeActiveSync", "devicePlatform": "android"}},
    {"signInIdentity": user,
     "signInContext": {"@odata.type": "#microsoft.graph.authContext", "authenticationContextValue": "C1"},
     "signInConditions": {"signInRiskLevel": "high", "userRiskLevel": "high", "insiderRiskLevel": "elevated",
                          "authenticationFlow": {"transferMethod": "deviceCodeFlow"}, "deviceInfo": device,
                          "ipAddress": "203.0.113.9", "country": "GB"}},
    {"signInIdentity": {"@odata.type": "#microsoft.graph.userSignIn", "userId": "a0000000-0000-4000-8000-000000000003"},
     "signInContext": {"@odata.type": "#microsoft.graph.applicationContext", "includeApplications": ["797f4846-ba00-4fd7-ba43-dac1f8f63013"]},
     "signInConditions": {"devicePlatform": "linux", "clientAppType": "other", "country": "US",
                          "deviceInfo": dict(device, isCompliant=False, trustType="Workplace", ownership="Personal", displayName="pc")}},
]
for r in requests:
    put("whatif_request", json.dumps(r))
put("whatif_request", b"\xef\xbb\xbf" + json.dumps(requests[0]).encode())
put("whatif_request", json.dumps(requests[4]).encode("utf-16-le"))
put("whatif_request", b"\xfe\xff" + json.dumps(requests[5]).encode("utf-16-be"))

for t in ("load_tenant", "device_filter", "whatif_request"):
    n = len(os.listdir(os.path.join(corpus, t)))
    print(f"{t}: {counts.get(t, 0)} new seeds, {n} in corpus/{t}")
PY
