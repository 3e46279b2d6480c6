"""Every error's `details` has one shape, an object, whatever the raiser passed."""

import pytest

from core.errors import InvalidInput, error_details


@pytest.mark.parametrize(("given", "shape"), [
    (None, {}),
    ({"max_bytes": 10}, {"max_bytes": 10}),
    ([{"loc": ["body"], "msg": "bad"}], {"errors": [{"loc": ["body"], "msg": "bad"}]}),
    ("42", {"value": "42"}),
])
def test_details_are_always_an_object(given, shape):
    assert error_details(given) == shape
    assert InvalidInput("x", details=given).details == shape
