"""The tutorial's client: a transfer of 30 from user 1 to user 2 as a saga
of TransOut and TransIn, submitted to a DTM server — here jetsaga's
DTM-compatible API.

Run: python3 client.py --dtm http://127.0.0.1:36789/api/dtmsvr --svc http://127.0.0.1:8081/api
     [--trans-in-result SUCCESS|FAILURE|FAILURE_AFTER_COMMIT] [--wait]
It prints the saga's gid.
"""
import argparse

import dtmsaga as saga  # with dtmcli installed: from dtmcli import saga, utils


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dtm", default="http://127.0.0.1:36789/api/dtmsvr")
    p.add_argument("--svc", default="http://127.0.0.1:8081/api")
    p.add_argument("--trans-in-result", default="SUCCESS")
    p.add_argument("--wait", action="store_true")
    a = p.parse_args()

    req = {"amount": 30}
    s = saga.Saga(a.dtm, saga.gen_gid(a.dtm))
    s.add(req, a.svc + "/TransOutSaga", a.svc + "/TransOutCompensate")
    s.add(dict(req, trans_in_result=a.trans_in_result), a.svc + "/TransInSaga", a.svc + "/TransInCompensate")
    s.wait_result = a.wait
    try:
        s.submit()
    finally:
        print(s.gid, flush=True)


if __name__ == "__main__":
    main()
