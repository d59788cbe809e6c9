"""Deployments rested by failures (routing.upstream.pool): with several consumers, one caller's
server errors do not rest a deployment for everyone (issue 8's open finding, the 5xx case)."""

from __future__ import annotations

from routing.config.settings import Route
from routing.upstream.pool import Selector


def test_one_consumer_s_server_errors_do_not_rest_a_deployment_for_everyone():
    clock = [100.0]
    route = Route(id="A", model="m", backend="azure-openai", endpoint="https://a.openai.azure.com",
                  deployment="m", api_version="2024-10-21", auth="managed-identity", key_header="api-key",
                  reasoning=False)
    several = Selector(clock=lambda: clock[0], consumers=5)
    assert not several.server_error(route, "noisy", 10) and not several.server_error(route, "noisy", 10)
    assert several.order([route]) == [route]  # still served: one caller's 5xx
    assert several.server_error(route, "other", 10)  # a second consumer: the deployment rests
    assert several.order([route]) == []
    clock[0] += 11
    assert not several.server_error(route, "noisy", 10)  # a new window after the cooldown
    alone = Selector(clock=lambda: clock[0], consumers=1)
    assert alone.server_error(route, "default", 10) and alone.order([route]) == []
