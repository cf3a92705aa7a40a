"""Every preset's spec, in both observation modes, matches docs/schemas/policy_spec.schema.json."""

from __future__ import annotations

import json

import pytest

from tests.agent_runtime.test_schemas import SPEC
from train.envs import build_spec
from train.presets import PRESETS


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_presets_spec_matches_the_schema(preset):
    for mode in ("pixels", "state"):
        SPEC.validate(json.loads(build_spec(preset, mode).to_json()))
