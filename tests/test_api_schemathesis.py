"""A bounded schemathesis run over /api/schema/: examples, coverage and fuzzing of every operation, then
stateful sequences, anonymously and with a staff token, in-process against the WSGI app."""

import pytest
import schemathesis
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections
from django.test import override_settings
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from rest_framework.authtoken.models import Token
from schemathesis.specs.openapi.checks import ignored_auth

from catalog import services

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

WRITES = "^(POST|PUT|PATCH) "
CHECKED_WRITES = {
    # Writes refuse some schema-valid bodies on purpose (an upload that is no readable photo, a name the
    # catalog normalises to nothing, a car model already in the catalog), and DRF's serializer fields
    # coerce JSON types (0 -> "0", "2023" -> 2023) by design.
    "include-name-regex": WRITES,
    "checks": {"positive_data_acceptance": {"enabled": False}, "negative_data_rejection": {"enabled": False}},
}
# The coverage phase enumerates every boundary of every field, a few hundred cases for a car model's
# spec fields. To keep the run near a minute: anonymous writes are refused (403) before their body is
# read, so they get examples and fuzzing only; a car model's body is covered once, with valid values,
# on create (its update body is the same fields), and invalid ones come from fuzzing.
ANONYMOUS_OPERATIONS = [
    CHECKED_WRITES,
    {"include-name-regex": "^(POST|PUT|PATCH|DELETE) ", "phases": {"coverage": {"enabled": False}}},
]
STAFF_OPERATIONS = [
    CHECKED_WRITES,
    {"include-name-regex": "^(PUT|PATCH) /api/v1/models/", "phases": {"coverage": {"enabled": False}}},
    {"include-name-regex": "^POST /api/v1/models/", "phases": {"coverage": {"generation": {"mode": "positive"}}}},
]
HOST = "localhost"  # what schemathesis' WSGI client sends


def load_schema(operations: list[dict]) -> schemathesis.BaseSchema:
    config = schemathesis.Config.from_dict(
        {"seed": 16, "generation": {"max-examples": 10, "deterministic": True}, "operations": operations}
    )
    with override_settings(ALLOWED_HOSTS=[HOST]):
        return schemathesis.openapi.from_wsgi("/api/schema/", WSGIHandler(), config=config)


anonymous_schema = load_schema(ANONYMOUS_OPERATIONS)
staff_schema = load_schema(STAFF_OPERATIONS)

HYPOTHESIS = hypothesis_settings(
    max_examples=10,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.fixture(autouse=True)
def in_process_app(settings):
    """Requests run inside the test's transaction: Django must not close its connection after each one."""
    settings.ALLOWED_HOSTS = [HOST]
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture(autouse=True)
def catalog_rows(db):
    car, _ = services.car_model_get_or_create(make="Acura", model="MDX", year=2023, defaults={"msrp_usd": 49550})
    services.specification_upsert(car, values={"horsepower": 290}, source="test")
    return car


@pytest.fixture
def staff_headers(django_user_model):
    user = django_user_model.objects.create_user("curator", password="pw-curator-123", is_staff=True, is_superuser=True)
    return {"Authorization": f"Token {Token.objects.create(user=user).key}"}


@anonymous_schema.parametrize()
@HYPOTHESIS
def test_anonymous(case):
    case.call_and_validate()


@staff_schema.parametrize()
@HYPOTHESIS
def test_staff(case, staff_headers):
    # The staff token is always sent, so checking that bad credentials are refused does not apply here.
    case.call_and_validate(headers=staff_headers, excluded_checks=[ignored_auth])


STATEFUL = hypothesis_settings(HYPOTHESIS, stateful_step_count=6)


def test_stateful_anonymous():
    anonymous_schema.as_state_machine().run(settings=STATEFUL)


def test_stateful_staff(staff_headers):
    class StaffStateMachine(staff_schema.as_state_machine()):
        def get_call_kwargs(self, case):
            return {"headers": staff_headers}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(response, excluded_checks=[ignored_auth], transport_kwargs=kwargs)

    StaffStateMachine.run(settings=STATEFUL)
