"""checkov over infra/ (Bicep framework, offline): no failed check, something actually scanned,
and every skipped check in infra/.checkov.yaml has its reason."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bicep_model import INFRA, MISSING_TOOLS, ROOT, yaml

CHECKOV_CONFIG = INFRA / ".checkov.yaml"


def test_every_skipped_check_has_a_reason():
    skipped = yaml.safe_load(CHECKOV_CONFIG.read_text())["skip-check"]
    reasons = {}
    for line in CHECKOV_CONFIG.read_text().splitlines():
        match = re.match(r"^\s*-\s*(CKV2?_[A-Z]+_\d+)\s*(?:#\s*(.*))?$", line)
        if match:
            reasons[match.group(1)] = (match.group(2) or "").strip()
    assert sorted(reasons) == sorted(skipped)
    missing = [check for check, reason in reasons.items() if len(reason) < 20]
    assert not missing, f"skipped without a reason (trailing '# reason' comment): {missing}"


def test_purge_protection_skips_name_the_parameter():
    """The purge-protection checks are skipped because it is a parameter (off for dev, on for
    production), not because it is missing: the skips must say so."""
    reasons = {m.group(1): m.group(2) for m in re.finditer(r"^\s*-\s*(CKV_AZURE_(?:110|42))\s*#\s*(.*)$",
                                                           CHECKOV_CONFIG.read_text(), re.M)}
    assert set(reasons) == {"CKV_AZURE_110", "CKV_AZURE_42"}
    assert all("keyVaultPurgeProtection" in reason for reason in reasons.values()), reasons


def checkov_command() -> list[str]:
    exe = shutil.which("checkov", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if exe is None:
        pytest.fail(MISSING_TOOLS)
    return [exe]


@pytest.fixture(scope="module")
def checkov_result():
    command = checkov_command() + ["--config-file", str(CHECKOV_CONFIG), "-d", str(INFRA),
                                   "--framework", "bicep", "--quiet", "--compact", "--skip-download",
                                   "-o", "json"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov printed no JSON report (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.returncode, report


def test_checkov_passes(checkov_result):
    returncode, report = checkov_result
    reports = report if isinstance(report, list) else [report]
    assert [r.get("check_type") for r in reports] == ["bicep"], f"checkov scanned nothing: {report}"
    summary = reports[0]["summary"]
    failed = [f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}"
              for c in reports[0]["results"]["failed_checks"]]
    assert not failed, "checkov failures (fix, or skip with a reason in infra/.checkov.yaml):\n" + "\n".join(failed)
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 0, "checkov scanned nothing"
    assert returncode == 0
