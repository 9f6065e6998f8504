import pytest

from workers import providers

from .fake_provider import FakeProvider


@pytest.fixture
def real_local_agents():
    """Opt in to the local provider starting real agent processes (tests/conftest.py refuses them)."""


@pytest.fixture
def fake():
    provider = FakeProvider()
    providers.use(provider)
    yield provider
    providers.use(None)


@pytest.fixture
def tenant_factory(db):
    """A fresh team and project per call (property tests run many examples in one test)."""
    import itertools

    from ..conftest import make_tenant

    counter = itertools.count()

    def make():
        n = next(counter)
        return make_tenant(f"owner{n}@example.com", f"team{n}", f"proj{n}")

    return make
