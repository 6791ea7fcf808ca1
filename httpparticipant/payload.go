package httpparticipant

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/jetsaga/jetsaga/events"
)

// Names used in the plans of HTTP steps.
const (
	// DefaultName is the participant name of HTTP steps unless configured
	// otherwise.
	DefaultName = "http"
	// ActionName and CompensateName are the action and compensation of an
	// HTTP step, as the plan names them (and as DTM's op parameter spells
	// them); the URLs are in the step's Payload.
	ActionName     = "action"
	CompensateName = "compensate"
)

// Payload is the payload of an HTTP step: where and how to call the
// service. The step's plan names participant [DefaultName] (or the
// configured name), action [ActionName] and compensation [CompensateName];
// every command of the step carries this payload.
type Payload struct {
	// Action and Compensate are the URLs called for op do and op undo. An
	// empty URL counts as success without a call (as in DTM).
	Action     string `json:"action"`
	Compensate string `json:"compensate"`
	// Body is sent unchanged (POST); empty: a GET without a body.
	Body string `json:"body,omitempty"`
	// BranchID is DTM's branch_id query parameter: the 1-based step number,
	// %02d. Default: the step's name.
	BranchID string `json:"branch_id,omitempty"`
	// Headers are added to every call (DTM's branch_headers), after
	// Content-Type, Accept and traceparent, which they may override.
	Headers map[string]string `json:"headers,omitempty"`
	// RequestTimeoutMS bounds one call. 0: the participant's
	// Config.RequestTimeout (3 s by default, as DTM's).
	RequestTimeoutMS int64 `json:"request_timeout_ms,omitempty"`
	// OngoingIntervalMS is the pause before asking again a service that
	// answered ONGOING (425). 0: Config.OngoingInterval.
	OngoingIntervalMS int64 `json:"ongoing_interval_ms,omitempty"`
	// OngoingLimitMS bounds how long one command keeps asking a service
	// that answers ONGOING, from the command's publication; past it the
	// command is dropped without an outcome (its step has timed out by
	// then: the gateway sets it to the step's timeout). 0:
	// Config.OngoingLimit.
	OngoingLimitMS int64 `json:"ongoing_limit_ms,omitempty"`
}

// DecodePayload reads and checks an HTTP step's payload: both URLs
// absolute http(s) URLs without user information (or empty), header names
// valid, durations not negative.
func DecodePayload(raw json.RawMessage) (Payload, error) {
	var p Payload
	if len(raw) == 0 {
		return p, fmt.Errorf("payload: missing (an HTTP step carries its URLs in its payload)")
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return p, fmt.Errorf("payload: %v", err)
	}
	return p, p.Validate()
}

// Validate checks the payload (see [DecodePayload]).
func (p *Payload) Validate() error {
	for _, f := range []struct{ name, url string }{{"action", p.Action}, {"compensate", p.Compensate}} {
		if f.url == "" {
			continue
		}
		if _, err := ParseURL(f.url); err != nil {
			return fmt.Errorf("payload.%s: %v", f.name, err)
		}
	}
	for k := range p.Headers {
		if !validHeaderName(k) {
			return fmt.Errorf("payload.headers: %q is not a valid header name", k)
		}
	}
	if p.RequestTimeoutMS < 0 || p.OngoingIntervalMS < 0 || p.OngoingLimitMS < 0 {
		return fmt.Errorf("payload: durations must not be negative")
	}
	return nil
}

// Encode encodes the payload for a plan.
func (p Payload) Encode() (json.RawMessage, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	if len(b) > events.MaxPayloadBytes {
		return nil, fmt.Errorf("payload: %d bytes, the limit is %d", len(b), events.MaxPayloadBytes)
	}
	return b, nil
}

// ParseURL parses a URL that an HTTP step may call: absolute, http or
// https, with a host, without user information.
func ParseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%q is not a URL: %v", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%q is not an http or https URL", raw)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("%q has no host", raw)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%q carries user information, which is not allowed", redactURL(u))
	}
	return u, nil
}

func redactURL(u *url.URL) string {
	c := *u
	c.User = nil
	return c.String()
}

func validHeaderName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return http.CanonicalHeaderKey(k) != ""
}

// ValidHeaderName reports whether k may be sent as an HTTP header name.
func ValidHeaderName(k string) bool { return validHeaderName(k) }
