"""The DTM tutorial's bank, in Flask: four saga handlers that move money
between two accounts, each inside DTM's barrier on PostgreSQL.

Run: python3 app.py --database-url postgres://... [--port 8081]
It prints "listening on http://127.0.0.1:PORT" once it serves.
"""
import argparse
import json
import signal
import sys
import threading
from decimal import Decimal

import psycopg2
from flask import Flask, request
from werkzeug.serving import make_server

from barrier import barrier_from_req

app = Flask(__name__)
DATABASE_URL = None
OUT_UID, IN_UID = 1, 2


class Failure(Exception):
    """A business failure: the handler answers FAILURE."""


def conn_new():
    return psycopg2.connect(DATABASE_URL)


def saga_adjust_balance(cursor, uid, amount):
    cursor.execute(
        "UPDATE dtm_busi.user_account SET balance = balance + %s, update_time = now() "
        "WHERE user_id = %s AND balance + %s >= 0",
        (amount, uid, amount))
    if cursor.rowcount == 0:
        raise Failure("update account %d: insufficient balance or no such account" % uid)


def amount():
    body = request.get_json(force=True, silent=True) or {}
    return Decimal(str(body.get("amount", 30))), body


def run(op, uid, sign):
    """The tutorial's handler body: adjust a balance inside the barrier."""
    amt, body = amount()
    conn = conn_new()
    try:
        result = body.get("trans_in_result", "SUCCESS") if op == "TransIn" else "SUCCESS"

        def busi_callback(cursor):
            saga_adjust_balance(cursor, uid, sign * amt)
            if result == "FAILURE":  # fails before its commit: rolled back
                raise Failure("TransIn refused")

        try:
            barrier_from_req(request).call(conn, busi_callback)
        except Failure as e:
            return {"dtm_result": "FAILURE", "message": str(e)}, 409
        if result == "FAILURE_AFTER_COMMIT":  # committed, then answers FAILURE
            return {"dtm_result": "FAILURE", "message": "TransIn failed after its commit"}
        return {"dtm_result": "SUCCESS"}
    finally:
        conn.close()


@app.post("/api/TransOutSaga")
def trans_out_saga():
    return run("TransOut", OUT_UID, -1)


@app.post("/api/TransOutCompensate")
def trans_out_compensate():
    return run("TransOutCompensate", OUT_UID, +1)


@app.post("/api/TransInSaga")
def trans_in_saga():
    return run("TransIn", IN_UID, +1)


@app.post("/api/TransInCompensate")
def trans_in_compensate():
    return run("TransInCompensate", IN_UID, -1)


def init_db(balance):
    with open(__file__.rsplit("/", 1)[0] + "/schema.sql") as f:
        ddl = f.read()
    conn = conn_new()
    with conn, conn.cursor() as c:
        c.execute(ddl)
        for uid in (OUT_UID, IN_UID):
            c.execute("INSERT INTO dtm_busi.user_account (user_id, balance) VALUES (%s, %s) "
                      "ON CONFLICT (user_id) DO UPDATE SET balance = EXCLUDED.balance", (uid, balance))
    conn.close()


def main():
    global DATABASE_URL
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--database-url", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8081)
    p.add_argument("--balance", default="10000")
    a = p.parse_args()
    DATABASE_URL = a.database_url
    init_db(a.balance)
    srv = make_server(a.host, a.port, app, threaded=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=srv.shutdown).start())
    print("listening on http://%s:%d" % (a.host, srv.server_port), flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
