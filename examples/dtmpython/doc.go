// Package dtmpython is DTM's Python tutorial run on jetsaga: the bank in
// Flask (app.py: the four saga handlers, each inside DTM's sub-transaction
// barrier on PostgreSQL, barrier.py), and the client (client.py) that
// submits the transfer saga to jetsaga's DTM-compatible API with the
// calls of DTM's Python client (dtmsaga.py, a stand-in for dtmcli-py where
// PyPI is out of reach).
//
// Run it against `jetsaga dev`, which serves the DTM API on
// http://127.0.0.1:36789/api/dtmsvr and lets HTTP steps call services on
// this machine (Debian: apt-get install python3-flask python3-psycopg2
// python3-requests):
//
//	python3 app.py --database-url postgres://…/bank &
//	python3 client.py --dtm http://127.0.0.1:36789/api/dtmsvr --svc http://127.0.0.1:8081/api
//
// The test in this directory runs the tutorial's scenarios against a real
// coordinator, HTTP participant and gateway: a committed transfer; TransIn
// answering FAILURE (rolled back); TransIn committing and then answering
// FAILURE (compensated once, balances right); repeated calls absorbed by the
// barrier. Under CI=true it fails when python3's packages are missing.
package dtmpython
