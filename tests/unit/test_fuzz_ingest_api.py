"""schemathesis against the ingest API's own OpenAPI description (in process, bounded).

Every answer must be one the description documents, with its documented body, and never a 5xx.
Publishing and batch records are the unit tests' fakes: the API's handling is what is fuzzed here;
the same handling runs in front of the real sidecar in the end-to-end tests.
"""

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from services.ingest.api import create_api

from .test_ingest_api import TOKEN, FakePublisher, FakeRecords

# Two rules JSON Schema cannot state: a body over 2 MiB is refused (413) before it is parsed, and task
# ids must be unique within a batch (422). So a schema-valid body may get either, as may an invalid one.
CONFIG = SchemathesisConfig.from_dict({"headers": {"Authorization": f"Bearer {TOKEN}"}, "checks": {
    "negative_data_rejection": {"expected-statuses": [400, 404, 405, 406, 409, 413, 415, 422]},
    "positive_data_acceptance": {"expected-statuses": ["2XX", 409, 413, 422]},
}})
# The fuzzer's requests carry the token and the in-process server's Host, as the CLI's do.
API = create_api(FakePublisher(), FakeRecords(), token=TOKEN, hosts={"testserver", "localhost"})
schema = schemathesis.openapi.from_asgi("/openapi.json", API, config=CONFIG)


@schema.parametrize()
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_answer_is_documented_and_none_is_a_server_error(case):
    case.call_and_validate()
