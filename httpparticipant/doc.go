// Package httpparticipant carries out saga steps whose action and
// compensation are HTTP URLs, calling them exactly as DTM v1.19 calls its
// saga branches, so that services written for DTM run unchanged on jetsaga.
//
// # Steps
//
// An HTTP step is an ordinary compensable step of participant [DefaultName]
// ("http"), action [ActionName] and compensation [CompensateName], whose
// payload is a [Payload]: the two URLs, the body, DTM's branch id, the
// branch headers and the timeouts. The DTM-compatible gateway
// (package dtmgateway) builds such plans from DTM's submit requests; in Go:
//
//	raw, _ := httpparticipant.Payload{
//		Action: "http://bank/api/TransOutSaga", Compensate: "http://bank/api/TransOutCompensate",
//		Body: `{"amount": 30}`, BranchID: "01",
//	}.Encode()
//	plan.Step("01", httpparticipant.DefaultName, httpparticipant.ActionName, httpparticipant.CompensateName, raw,
//		orchestrator.CompensateFailed())
//
// # Calls
//
// For op do the participant calls Action, for op undo Compensate:
// POST url?gid=<saga id>&trans_type=saga&branch_id=<BranchID>&op=action|compensate
// with the body unchanged (a GET when the body is empty), Content-Type and
// Accept application/json, the saga's W3C traceparent and tracestate, then
// the branch headers. An empty URL counts as success without a call. The
// answer, read as DTM reads it:
//
//   - 425, or a body containing ONGOING: asked again after the step's
//     ongoing interval (1 s by default), without spending the retry
//     budget, for at most the step's ongoing limit from the command's
//     publication (then the command is dropped: its step has timed out);
//   - 409, or a body containing FAILURE: the action failed (outcome failed:
//     with [orchestrator.CompensateFailed] the saga compensates this step
//     too, as DTM does); from a compensation it is an error, retried;
//   - 200: succeeded (compensated);
//   - anything else, a timeout (the step's request timeout, 3 s by
//     default) or a connection error: transient, retried with the step's
//     backoff until its retry budget is spent (outcome exhausted: the
//     action is compensated, a compensation parks the saga).
//
// # Safety
//
// The participant calls only URLs its [AllowList] allows (hosts or URL
// prefixes), and follows redirects only within it: whoever can publish a
// start cannot make it an open proxy. A command for any other URL is
// rejected without a call.
//
// # Running
//
// [Participant.Run] shares one durable consumer among every instance of the
// same name, handles Config.Concurrency commands at a time over pooled
// connections and stops gracefully. The participant keeps no state: the
// services' own barriers (DTM's sub-transaction barrier) make the repeated
// calls of at-least-once delivery harmless. `jetsaga http-participant` runs
// it as a service; `jetsaga dev` runs one.
package httpparticipant
