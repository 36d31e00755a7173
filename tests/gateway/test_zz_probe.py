import json
import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

CASES = {
 "deep": ("[" * 100000 + "]" * 100000).encode(),
 "deep_input_900": ('{"input": {"amount": 1, "note": ' + "[" * 900 + "]" * 900 + '}}').encode(),
 "bigint400": b'{"input": {"amount": 1' + b"0" * 400 + b'}}',
 "bigint400_years": b'{"input": {"amount": 1, "years_trading": 1' + b"0" * 400 + b'}}',
 "digits1e5": b'{"input": {"amount": 1' + b"0" * 100000 + b'}}',
 "explain_list": b'{"input": {"amount": 1}, "explain": []}',
 "explain_dict": b'{"input": {"amount": 1}, "explain": {}}',
 "wait_list": b'{"input": {"amount": 1}, "wait": []}',
 "wait_bigint": b'{"input": {"amount": 1}, "wait": 1' + b"0"*400 + b'}',
 "wait_inf": b'{"input": {"amount": 1}, "wait": 1e400}',
 "cb_list": b'{"input": {"amount": 1}, "callback_url": []}',
}

@pytest.mark.parametrize("name", list(CASES))
def test_probe(name, loan, client_api):
    r = client_api.post("/predict/loan-approval", data=CASES[name], content_type="application/json")
    print(name, r.status_code, r.content[:300])

@pytest.mark.parametrize("depth", range(880, 1000, 4))
def test_depth(depth, loan, client_api):
    body = ('{"input": {"amount": 1, "note": ' + "[" * depth + "]" * depth + '}}').encode()
    r = client_api.post("/predict/loan-approval", data=body, content_type="application/json")
    print(depth, r.status_code, r.content[:100])
    body = ('{"input": ' + "[" * depth + "]" * depth + '}').encode()
    r = client_api.post("/predict/loan-approval", data=body, content_type="application/json")
    print("in", depth, r.status_code, r.content[:100])

@pytest.mark.parametrize("cs", ["rot13", "zlib", "base64", "hex", "uu", "bz2", "idna", "punycode", "unicode_escape", "utf-16", "utf-32", "latin-1", "bogus", "utf-8-sig", "quopri"])
def test_charset(cs, loan, client_api):
    r = client_api.post("/predict/loan-approval", data=b'{"input": {"amount": 1}}', content_type="application/json; charset=" + cs)
    print(cs, r.status_code, r.content[:150])
