"""Named reviewers shared by the review tests: rita is the default reviewer, sam and tess are colleagues."""

import pytest

from tests import factories


@pytest.fixture
def rita(reviewer):
    return reviewer[0]


@pytest.fixture
def rita_client(client, rita):
    client.force_login(rita)
    return client


@pytest.fixture
def sam(db):
    return factories.reviewer_with_token("sam", password="pw-sam-123")[0]


@pytest.fixture
def tess(db):
    return factories.reviewer_with_token("tess", password="pw-tess-123")[0]
