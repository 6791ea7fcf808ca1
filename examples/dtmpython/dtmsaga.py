"""The part of DTM's Python client (dtmcli-py) that the tutorial uses, for
machines without PyPI: utils.gen_gid and saga.Saga with add and submit. It
posts exactly what dtmcli-py posts (its whole object, nulls included). With
dtmcli installed, `from dtmcli import saga, utils` works the same.
"""
import json

import requests


def gen_gid(dtm):
    r = requests.get(dtm + "/newGid")
    r.raise_for_status()
    body = r.json()
    if body.get("dtm_result") != "SUCCESS":
        raise Exception("newGid: %s" % r.text)
    return body["gid"]


class Saga:
    def __init__(self, dtm, gid):
        self.dtm = dtm
        self.gid = gid
        self.trans_type = "saga"
        self.custom_data = None
        self.steps = []
        self.payloads = []
        self.query_prepared = None
        self.protocol = None
        self.wait_result = False
        self.timeout_to_fail = 0
        self.request_timeout = 8
        self.retry_interval = 0
        self.passthrough_headers = []
        self.branch_headers = {}
        self.concurrent = False
        self.orders = {}

    def add(self, data, action, compensate):
        self.steps.append({"action": action, "compensate": compensate})
        self.payloads.append(json.dumps(data))
        return self

    def add_branch_order(self, branch, pre_branches):
        self.orders[branch] = pre_branches
        return self

    def enable_concurrent(self):
        self.concurrent = True
        return self

    def submit(self):
        if self.concurrent:
            self.custom_data = json.dumps({"orders": self.orders, "concurrent": True})
        body = {k: v for k, v in self.__dict__.items() if k not in ("dtm", "orders")}
        r = requests.post(self.dtm + "/submit", json=body)
        if r.status_code != 200 or "FAILURE" in r.text:
            raise Exception("submit: %d %s" % (r.status_code, r.text))
        return r
