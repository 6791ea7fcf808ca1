// Package dtmgateway serves DTM's server API (/api/dtmsvr/…) for sagas on
// jetsaga, so that programs written for DTM — its Go and Python clients,
// and the services they call — run unchanged but for the server URL.
//
// A submit is translated into a jetsaga plan: one step per DTM step, named
// by its branch id ("01", "02", …), run by the HTTP participant (package
// httpparticipant) with the step's URLs, body and branch headers in its
// payload, compensating a failed action as DTM does
// (orchestrator.CompensateFailed). DTM's options map onto the plan:
//
//	timeout_to_fail        the saga's deadline
//	request_timeout        each call's timeout (3 s by default)
//	retry_interval         the first backoff after an error, and the pause after ONGOING
//	retry_limit            the retry budget (10 by default): spent, the action is
//	                       compensated, a compensation parks the saga
//	branch_headers         headers added to every call
//	custom_data            {"concurrent":true,"orders":{"2":[0,1]}}: the steps' dependencies
//	wait_result            wait (at most Config.WaitTimeout) for the end: 200 committed, 409 otherwise
//
// Routes: newGid, submit, query, all (paged by position/limit, filtered by
// status, transType, createTimeStart/End, gid), forceStop (resolves a saga
// parked while compensating; refuses the rest), resetNextCronTime
// (redrives a parked saga), abort (409: not for sagas), and /api/ping.
// Other transaction types and their routes answer a "not supported by
// jetsaga" error. Answers are DTM's: 200 {"dtm_result":"SUCCESS"}, 409
// {"dtm_result":"FAILURE","message":…}, 500 {"message":…} naming the field
// of a bad request; a bad request starts nothing.
//
// jetsaga's states map onto DTM's: running → submitted, compensating →
// aborting, committed → succeed, compensated (and rejected) → failed; a
// parked saga keeps its direction's status and says "parked": true with its
// reason. Branches are listed as DTM's SQL store lists them (compensate,
// then action, per step).
//
// The gateway keeps no state: run as many as you like beside the
// coordinators (`jetsaga gateway`); `jetsaga dev` serves one.
package dtmgateway
