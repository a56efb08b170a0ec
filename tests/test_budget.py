"""The samples-per-second budget: the rates plan() chooses, and who may set the budget."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from hsagent.config import dnssd
from hsagent.config.conffile import ConfigError, parse
from hsagent.sampling.budget import Demand, needs_plan, plan, samples_per_second
from hsagent.settings import DEFAULT_SAMPLE_BUDGET, Settings


def test_under_the_budget_every_configured_rate_stays():
    demands = {"a": Demand(100_000, 100, 100), "b": Demand(5_000, 10, 10)}  # 1,000 + 500 /s
    assert plan(demands, 2_000) == {"a": 100, "b": 10}
    assert not needs_plan(demands, 2_000)


def test_a_flooded_port_is_thinned_and_a_quiet_one_keeps_its_rate():
    # 1 in 1 asked everywhere (a hostile DNS-SD): 1,000,000 and 300 packets/s, budget 1,000
    demands = {"flood": Demand(1_000_000, 1, 1), "quiet": Demand(300, 1, 1)}
    assert needs_plan(demands, 1_000)
    rates = plan(demands, 1_000)
    assert rates["quiet"] == 1  # 300/s is below its fair share of 500
    assert rates["flood"] == math.ceil(1_000_000 / 700)  # the other 700 samples/s


def test_raised_rates_come_down_when_traffic_falls_but_not_at_the_edge():
    assert needs_plan({"a": Demand(1_000, 1, 100)}, 1_000)  # 10/s flowing: replan
    assert not needs_plan({"a": Demand(90_000, 1, 100)}, 1_000)  # 900/s: keep
    assert plan({"a": Demand(1_000, 1, 100)}, 1_000) == {"a": 1}


def test_sampling_off_stays_off():
    assert plan({"off": Demand(10**9, 0, 0), "on": Demand(10**6, 1, 1)}, 100) == {"off": 0, "on": 10_000}


@given(st.lists(st.tuples(st.floats(0, 1e8), st.integers(0, 100_000)), min_size=1, max_size=50),
       st.integers(1, 100_000))
def test_plans_keep_to_the_budget_and_never_sample_more_than_configured(pairs, budget):
    demands = {i: Demand(packets, configured, configured) for i, (packets, configured) in enumerate(pairs)}
    rates = plan(demands, budget)
    assert all(rates[i] >= d.configured and (rates[i] == 0) == (d.configured == 0)
               for i, d in demands.items())
    planned = sum(samples_per_second(d, rates[i]) for i, d in demands.items())
    wanted = sum(samples_per_second(d, d.configured) for d in demands.values())
    if wanted <= budget:
        assert rates == {i: d.configured for i, d in demands.items()}
    else:
        assert planned <= budget * (1 + 1e-9)


def test_the_budget_is_the_config_files_alone(tmp_path):
    assert Settings().max_samples_per_second == DEFAULT_SAMPLE_BUDGET
    settings, _ = parse("sflow {\n maxSamplesPerSecond = 800\n}\n", "hsagent.conf")
    assert settings.max_samples_per_second == 800
    try:
        parse("sflow {\n maxSamplesPerSecond = 2000000\n}\n", "hsagent.conf")
    except ConfigError as err:
        assert "hsagent.conf:2" in str(err) and "out of range" in str(err)
    else:
        raise AssertionError("an out-of-range budget was accepted")
    values, warnings = dnssd.parse_txt([b"txtvers=1", b"maxSamplesPerSecond=1000000", b"sampling=1000"])
    assert values == {"sampling": 1000}
    assert any("maxSamplesPerSecond" in w for w in warnings)
