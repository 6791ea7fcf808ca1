// Package events is jetsaga's wire protocol: subjects, stream and bucket
// configurations, message types, headers, deterministic message ids, and
// their JSON encoding with validation. It does no I/O; every other package
// of jetsaga speaks through it. PROTOCOL.md in this directory specifies the
// same protocol for implementers in other languages.
//
// # Subjects
//
// A [Namespace] builds every name from a prefix (default "saga"):
//
//	<prefix>.start.<saga>              start message      stream SAGAS
//	<prefix>.evt.<participant>.<saga>  outcome event      stream SAGAS
//	<prefix>.tick.<saga>               timer fell due     stream SAGAS
//	<prefix>.ctl.<saga>                operator action    stream SAGAS
//	<prefix>.sched.<saga>              schedule (earlier  stream SAGAS
//	                                   versions' timers)
//	<prefix>.cmd.<participant>.<saga>  step command       stream SAGA_CMDS
//
// Saga ids and names are single tokens ([ValidToken]).
//
// # Messages
//
// Each message is one JSON object with a protocol version "v" ([Version]).
// Decoding ([DecodeStart], [DecodeCommand], [DecodeOutcome], [DecodeTick],
// [DecodeControl]) is strict: unknown versions, unknown fields, missing or
// malformed fields, oversized documents and invalid plans are rejected with a
// [*FieldError] naming the field; every such error matches [ErrInvalid].
//
//	start := events.Start{SagaID: id, Name: "transfer", Steps: []events.Step{
//		{Name: "debit", Participant: "bank-a", Action: "TransOut", Compensation: "TransOutCompensate"},
//		{Name: "credit", Participant: "bank-b", Action: "TransIn", Compensation: "TransInCompensate"},
//	}}
//	data, err := start.Encode() // validates; "credit" runs after "debit"
package events
