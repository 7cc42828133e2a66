"""Deterministic ULID-looking IDs and the catalogue of realistic playbooks bodies draw on."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

_CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_MASK64: Final = (1 << 64) - 1


def ulid(seed: int, prefix: str = "01HZ") -> str:
    """A deterministic 26-character ULID-looking ID (Crockford base32)."""
    chars = [prefix]
    x = (seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & _MASK64
    for _ in range(26 - len(prefix)):
        x = (x * 6364136223846793005 + 1442695040888963407) & _MASK64
        chars.append(_CROCKFORD[x >> 59])
    return "".join(chars)


@dataclass(frozen=True, slots=True)
class Playbook:
    """A realistic playbook: what its executions' bodies say, and how it fails."""

    name: str
    slug: str
    trigger_type: str
    steps_total: int
    failing_step: str
    failure: str
    inputs: Mapping[str, Any]
    event: Mapping[str, Any]
    subflows: Mapping[str, str]
    timezone: str = ""

    @property
    def playbook_id(self) -> str:
        """A stable ULID-looking ID derived from the slug."""
        return _PLAYBOOK_IDS[self.slug]

    @property
    def pack_id(self) -> str:
        """The ID of the pack the playbook ships in."""
        return "pack_01HZZ" + self.slug.upper().replace("-", "")[:8]


PLAYBOOKS: Final[tuple[Playbook, ...]] = (
    Playbook(
        name="Isolate compromised host",
        slug="isolate-compromised-host",
        trigger_type="Webhook",
        steps_total=7,
        failing_step="Contain host in CrowdStrike",
        failure="CrowdStrike API returned 403: API client lacks the Hosts:Write scope",
        inputs={"hostname": "wks-fin-0412", "severity": "high"},
        event={"source": "crowdstrike", "detection_id": "ldt:4f2a9c:88213"},
        subflows={"subflow_ref_1": "Notify on-call", "subflow_ref_2": "Open incident ticket"},
    ),
    Playbook(
        name="Rotate IAM keys",
        slug="rotate-iam-keys",
        trigger_type="Scheduled",
        steps_total=6,
        failing_step="Deactivate old access key",
        failure="AccessDenied: iam:UpdateAccessKey on user svc-deploy",
        inputs={"account_id": "123456789012", "max_key_age_days": 90},
        event={"schedule": "0 3 * * 1"},
        subflows={"subflow_ref_1": "Post to #secops"},
        timezone="America/New_York",
    ),
    Playbook(
        name="Enrich phishing IOC",
        slug="enrich-phishing-ioc",
        trigger_type="Event",
        steps_total=5,
        failing_step="Query VirusTotal",
        failure="VirusTotal quota exceeded (429) after 3 attempts",
        inputs={"ioc": "hxxps://login-m1crosoft[.]com/auth", "ioc_type": "url"},
        event={"source": "email-gateway", "message_id": "<CAF3x9@mail.example.com>"},
        subflows={"subflow_ref_1": "Lookup URL reputation"},
    ),
    Playbook(
        name="Restart pod",
        slug="restart-pod",
        trigger_type="Manual",
        steps_total=4,
        failing_step="kubectl rollout restart",
        failure='deployments.apps "checkout" is forbidden for service account blink-runner',
        inputs={"namespace": "payments", "deployment": "checkout"},
        event={"requested_by": "oncall@acme.example"},
        subflows={},
    ),
    Playbook(
        name="Block malicious IP on firewall",
        slug="block-malicious-ip",
        trigger_type="Webhook",
        steps_total=5,
        failing_step="Push block rule to Palo Alto",
        failure="commit failed: another commit is in progress on fw-edge-01",
        inputs={"ip": "203.0.113.77", "ttl_hours": 24},
        event={"source": "siem", "rule": "Brute force from single IP"},
        subflows={"subflow_ref_1": "Check IP allowlist"},
    ),
    Playbook(
        name="Offboard departing employee",
        slug="offboard-employee",
        trigger_type="Manual",
        steps_total=9,
        failing_step="Transfer Google Drive ownership",
        failure="Drive transfer API timed out after 300 s",
        inputs={"employee_email": "j.doe@acme.example", "manager_email": "a.lee@acme.example"},
        event={"ticket": "HR-2291"},
        subflows={"subflow_ref_1": "Revoke SaaS sessions", "subflow_ref_2": "Archive mailbox"},
    ),
    Playbook(
        name="Triage GuardDuty finding",
        slug="triage-guardduty-finding",
        trigger_type="Event",
        steps_total=6,
        failing_step="Describe EC2 instance",
        failure="InvalidInstanceID.NotFound: i-0a1b2c3d4e5f67890",
        inputs={"finding_type": "UnauthorizedAccess:EC2/SSHBruteForce", "region": "eu-west-1"},
        event={"source": "aws.guardduty", "finding_id": "8ec3b2f0c1d94e6a"},
        subflows={"subflow_ref_1": "Enrich AWS resource"},
    ),
    Playbook(
        name="Disable compromised Okta user",
        slug="disable-okta-user",
        trigger_type="Webhook",
        steps_total=4,
        failing_step="Wait for analyst approval",
        failure="no approval within the step timeout (3600 s)",
        inputs={"user": "m.smith@acme.example", "reason": "impossible travel"},
        event={"source": "okta", "event_type": "security.threat.detected"},
        subflows={},
    ),
    Playbook(
        name="Quarantine suspicious email",
        slug="quarantine-suspicious-email",
        trigger_type="Event",
        steps_total=4,
        failing_step="Move message to quarantine",
        failure="Graph API returned 404: message already deleted by the user",
        inputs={"mailbox": "finance@acme.example", "message_id": "AAMkAGI2TG93AAA="},
        event={"source": "microsoft-defender", "alert_id": "da637291085411733957"},
        subflows={"subflow_ref_1": "Notify reporter"},
    ),
)
_PLAYBOOK_IDS: Final = {pb.slug: ulid(zlib.crc32(pb.slug.encode()), "01HY") for pb in PLAYBOOKS}
PLAYBOOKS_BY_NAME: Final = {pb.name: pb for pb in PLAYBOOKS}
