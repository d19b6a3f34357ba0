"""Fixtures for the APNs integration tests: a team key, a running emulator, a provider."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from apns_fixtures import BUNDLE, KEY_ID, TEAM_ID, TeamKey, make_team_key, token_credentials

from clarion.emulators.apns import ApnsEmulator
from clarion.providers.apns import ApnsProvider, create_apns_provider


@pytest.fixture
def team_key() -> TeamKey:
    return make_team_key()


@pytest.fixture
async def emulator(team_key: TeamKey) -> AsyncIterator[ApnsEmulator]:
    async with ApnsEmulator(seed=7) as emu:
        emu.register_key(TEAM_ID, KEY_ID, team_key.public_key)
        emu.register_bundle(BUNDLE, TEAM_ID)
        yield emu


@pytest.fixture
async def provider(emulator: ApnsEmulator, team_key: TeamKey) -> AsyncIterator[ApnsProvider]:
    p = create_apns_provider(
        token_credentials(team_key), base_url=emulator.url, ca_file=emulator.ca_file
    )
    yield p
    await p.close()
