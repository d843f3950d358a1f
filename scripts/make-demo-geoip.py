#!/usr/bin/env python3
"""Write examples/geoip/demo-country.mmdb, the tiny GeoIP country database of the demo and tests.

    python3 scripts/make-demo-geoip.py [OUTPUT]

It holds only loopback and documentation ranges (RFC 5737, RFC 3849), so it can never be taken
for real data, in the GeoLite2-Country layout that Gatehouse reads (`country.iso_code`):

    127.0.0.0/8, ::1/128   GB   the demo runs on localhost; its home country is GB
    203.0.113.0/24         GB   Contoso's London HQ range in the example tenant
    198.51.100.0/24        FR
    192.0.2.0/24           US
    2001:db8:1000::/48     GB
    2001:db8:f000::/48     FR

The database is IPv6 (ip_version 6). IPv4 networks sit under ::/96, where MaxMind readers look
up IPv4 addresses, and again under ::ffff:0:0/96, so that IPv4-mapped IPv6 addresses (what a
dual-stack socket reports for an IPv4 client) find the same country.

The writer (PyPI `mmdb-writer`) and the reader used for the self-check (PyPI `maxminddb`) are
installed into a throwaway venv under /tmp when this Python lacks them; nothing is installed into
the repository. build_epoch is fixed, so the same networks always give the same bytes.
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REQUIREMENTS = ["mmdb-writer==0.2.7", "netaddr==1.3.0", "maxminddb==3.2.0"]
VENV = Path(tempfile.gettempdir()) / "gatehouse-make-demo-geoip-venv"
BUILD_EPOCH = 1767225600  # 2026-01-01T00:00:00Z

NAMES = {"GB": "United Kingdom", "FR": "France", "US": "United States"}
NETWORKS = [
    ("127.0.0.0/8", "GB"),
    ("::1/128", "GB"),
    ("203.0.113.0/24", "GB"),
    ("198.51.100.0/24", "FR"),
    ("192.0.2.0/24", "US"),
    ("2001:db8:1000::/48", "GB"),
    ("2001:db8:f000::/48", "FR"),
]
# Addresses read back after writing, with the country each must give (None: not in the file).
CHECKS = [
    ("127.0.0.1", "GB"),
    ("::1", "GB"),
    ("::ffff:127.0.0.1", "GB"),
    ("203.0.113.10", "GB"),
    ("198.51.100.23", "FR"),
    ("192.0.2.1", "US"),
    ("::ffff:192.0.2.1", "US"),
    ("2001:db8:1000::1", "GB"),
    ("2001:db8:f000::1", "FR"),
    ("2001:db8:2000::1", None),
    ("8.8.8.8", None),
]


def ensure_packages() -> None:
    """Re-run this script under a /tmp venv that has the writer and reader, if need be."""
    try:
        import maxminddb  # noqa: F401
        import mmdb_writer  # noqa: F401
        import netaddr  # noqa: F401

        return
    except ImportError:
        pass
    python = VENV / "bin" / "python"
    if os.environ.get("GATEHOUSE_GEOIP_VENV") == "1":
        sys.exit(f"{python} still lacks {', '.join(REQUIREMENTS)}")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *REQUIREMENTS],
        check=True,
    )
    env = dict(os.environ, GATEHOUSE_GEOIP_VENV="1")
    os.execve(str(python), [str(python), os.path.abspath(__file__), *sys.argv[1:]], env)


def write(output: Path) -> None:
    from mmdb_writer import MMDBWriter
    from netaddr import IPNetwork, IPSet

    class Writer(MMDBWriter):
        def _build_meta(self):
            return {**super()._build_meta(), "build_epoch": BUILD_EPOCH}

    writer = Writer(
        ip_version=6,
        ipv4_compatible=True,
        database_type="GeoLite2-Country",
        languages=["en"],
        description={"en": "Gatehouse demo country database: loopback and documentation ranges only"},
    )
    for cidr, iso in NETWORKS:
        record = {"country": {"iso_code": iso, "names": {"en": NAMES[iso]}}}
        network = IPNetwork(cidr)
        writer.insert_network(IPSet([network]), record)  # IPv4 goes under ::/96
        if network.version == 4:
            writer.insert_network(IPSet([network.ipv6(ipv4_compatible=False)]), record)
    output.parent.mkdir(parents=True, exist_ok=True)
    writer.to_db_file(str(output))


def check(output: Path) -> None:
    import maxminddb

    failed = False
    with maxminddb.open_database(str(output)) as reader:
        meta = reader.metadata()
        print(f"{output}: {meta.database_type}, ip_version {meta.ip_version}, "
              f"{meta.node_count} nodes, {output.stat().st_size} bytes")
        for address, want in CHECKS:
            record = reader.get(address)
            got = record["country"]["iso_code"] if record else None
            ok = got == want
            failed |= not ok
            print(f"  {address:<20} {got or '-':<3} {'ok' if ok else f'WRONG (want {want})'}")
    if failed:
        sys.exit("the written database does not give the expected countries")


def main() -> None:
    ensure_packages()
    root = Path(__file__).resolve().parent.parent
    output = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "examples/geoip/demo-country.mmdb"
    write(output)
    check(output)


if __name__ == "__main__":
    main()
