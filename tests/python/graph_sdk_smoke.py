"""Microsoft's Python Graph SDK (msgraph-sdk) against a running Gatehouse.

Run by the Rust integration test `graph_sdk::the_python_graph_sdk_works_against_gatehouse`, which
starts the server and passes GATEHOUSE_BASE_URL (…/v1.0) and GATEHOUSE_TOKEN. Wired the way
graph-shapes.md §8 describes: a static bearer token and `adapter.base_url`.
"""

import asyncio
import os
import sys
import urllib.parse
from datetime import datetime, timedelta, timezone

from kiota_abstractions.authentication import (
    AccessTokenProvider,
    AllowedHostsValidator,
    BaseBearerTokenAuthenticationProvider,
)
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.identity.conditional_access.policies.policies_request_builder import (
    PoliciesRequestBuilder,
)
from msgraph.generated.models.conditional_access_applications import ConditionalAccessApplications
from msgraph.generated.models.conditional_access_client_app import ConditionalAccessClientApp
from msgraph.generated.models.conditional_access_condition_set import ConditionalAccessConditionSet
from msgraph.generated.models.conditional_access_grant_control import ConditionalAccessGrantControl
from msgraph.generated.models.conditional_access_grant_controls import ConditionalAccessGrantControls
from msgraph.generated.models.conditional_access_locations import ConditionalAccessLocations
from msgraph.generated.models.conditional_access_policy import ConditionalAccessPolicy
from msgraph.generated.models.conditional_access_policy_state import ConditionalAccessPolicyState
from msgraph.generated.models.conditional_access_users import ConditionalAccessUsers
from msgraph.generated.models.i_pv4_cidr_range import IPv4CidrRange
from msgraph.generated.models.ip_named_location import IpNamedLocation
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.temporary_access_pass_authentication_method import (
    TemporaryAccessPassAuthenticationMethod,
)
from msgraph.generated.users.users_request_builder import UsersRequestBuilder

BASE = os.environ["GATEHOUSE_BASE_URL"]
TOKEN = os.environ["GATEHOUSE_TOKEN"]
ISAIAH = "a0000000-0000-4000-8000-000000000004"


class StaticToken(AccessTokenProvider):
    async def get_authorization_token(self, uri, additional_authentication_context={}):
        return TOKEN

    def get_allowed_hosts_validator(self):
        return AllowedHostsValidator([urllib.parse.urlparse(BASE).hostname])


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok: {what}")


async def main():
    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(StaticToken()))
    adapter.base_url = BASE
    client = GraphServiceClient(request_adapter=adapter)

    # A named location and a report-only policy that uses it.
    location = await client.identity.conditional_access.named_locations.post(
        IpNamedLocation(
            odata_type="#microsoft.graph.ipNamedLocation",
            display_name="SDK test range",
            is_trusted=False,
            ip_ranges=[IPv4CidrRange(odata_type="#microsoft.graph.iPv4CidrRange", cidr_address="192.0.2.0/24")],
        )
    )
    check(isinstance(location, IpNamedLocation) and location.id, "named location created, typed")
    check(location.ip_ranges[0].cidr_address == "192.0.2.0/24", "CIDR round-trips")

    policy = await client.identity.conditional_access.policies.post(
        ConditionalAccessPolicy(
            display_name="SDK test: block the test range (report-only)",
            state=ConditionalAccessPolicyState.EnabledForReportingButNotEnforced,
            conditions=ConditionalAccessConditionSet(
                users=ConditionalAccessUsers(include_users=["All"]),
                applications=ConditionalAccessApplications(include_applications=["All"]),
                client_app_types=[ConditionalAccessClientApp.All],
                locations=ConditionalAccessLocations(include_locations=[location.id]),
            ),
            grant_controls=ConditionalAccessGrantControls(
                operator="OR", built_in_controls=[ConditionalAccessGrantControl.Block]
            ),
        )
    )
    check(policy.id and policy.state == ConditionalAccessPolicyState.EnabledForReportingButNotEnforced,
          "policy created with its enum state")
    check(policy.conditions.locations.include_locations == [location.id], "policy conditions round-trip")

    # Every policy, five at a time, following @odata.nextLink verbatim.
    query = PoliciesRequestBuilder.PoliciesRequestBuilderGetQueryParameters(top=5)
    page = await client.identity.conditional_access.policies.get(
        request_configuration=RequestConfiguration(query_parameters=query)
    )
    ids, pages = [p.id for p in page.value], 1
    while page.odata_next_link:
        page = await client.identity.conditional_access.policies.with_url(page.odata_next_link).get()
        ids += [p.id for p in page.value]
        pages += 1
    check(pages >= 4, f"policies came in {pages} pages")
    check(len(ids) == len(set(ids)) and policy.id in ids and len(ids) == 17, f"{len(ids)} policies, each once")

    # Users with a filter and a count, the way the SDK sends them.
    users = await client.users.get(
        request_configuration=RequestConfiguration(
            query_parameters=UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(
                filter="startswith(displayName,'A')", count=True, select=["id", "displayName"]
            ),
            headers={"ConsistencyLevel": "eventual"},
        )
    )
    names = sorted(u.display_name for u in users.value)
    check(names and all(n.startswith("A") for n in names), f"filtered users: {names}")

    # A Temporary Access Pass: the code once, then never again.
    start = datetime.now(timezone.utc) + timedelta(days=30)
    tap = await client.users.by_user_id(ISAIAH).authentication.temporary_access_pass_methods.post(
        TemporaryAccessPassAuthenticationMethod(start_date_time=start, lifetime_in_minutes=60, is_usable_once=True)
    )
    check(tap.temporary_access_pass and len(tap.temporary_access_pass) >= 8, "TAP created with its code")
    check(tap.is_usable is False and tap.method_usability_reason == "NotYetValid", "a future TAP is not yet valid")
    again = await (
        client.users.by_user_id(ISAIAH)
        .authentication.temporary_access_pass_methods.by_temporary_access_pass_authentication_method_id(tap.id)
        .get()
    )
    check(again.id == tap.id and again.temporary_access_pass is None, "TAP read back without its code")
    listed = await client.users.by_user_id(ISAIAH).authentication.temporary_access_pass_methods.get()
    check(len(listed.value) == 1 and listed.value[0].temporary_access_pass is None, "TAP listed without its code")

    # Graph errors surface as ODataError with code and status.
    try:
        await client.users.by_user_id("00000000-0000-4000-8000-00000000beef").get()
        check(False, "unknown user is an error")
    except ODataError as e:
        check(e.response_status_code == 404 and e.error.code == "Request_ResourceNotFound", "unknown user → 404 ODataError")
    try:
        await client.users.by_user_id(ISAIAH).authentication.temporary_access_pass_methods.post(
            TemporaryAccessPassAuthenticationMethod(lifetime_in_minutes=100000)
        )
        check(False, "an out-of-range lifetime is refused")
    except ODataError as e:
        check(e.response_status_code == 400 and "LifetimeInMinutes" in e.error.message, "bad lifetime → 400 ODataError")

    # Sign-in logs (the Rust test signed someone in before starting this script).
    logs = await client.audit_logs.sign_ins.get()
    check(len(logs.value) >= 1, f"{len(logs.value)} sign-in log entries")
    entry = logs.value[0]
    check(entry.user_principal_name and entry.status is not None and entry.conditional_access_status is not None,
          "sign-in log entries are typed signIn objects")
    check(entry.applied_conditional_access_policies is not None, "applied policies are listed")
    print("all checks passed")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
