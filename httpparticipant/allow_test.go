package httpparticipant

import (
	"strings"
	"testing"
)

func TestAllowList(t *testing.T) {
	a := MustAllow("bank", "127.0.0.1:5000", "https://svc.example/api/", "http://pay:8080/v1")
	for _, u := range []string{
		"http://bank/api/TransOut", "https://bank:9443/x", "http://BANK/x",
		"http://127.0.0.1:5000/api/TransIn",
		"https://svc.example/api/TransOut", "https://svc.example:443/api/x",
		"http://pay:8080/v1", "http://pay:8080/v1/x?y=1",
	} {
		if err := a.Check(u); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	for _, u := range []string{
		"http://bank.evil/x", "http://evilbank/x", "http://127.0.0.1:5001/x", "http://127.0.0.1/x",
		"http://svc.example/api/x", "https://svc.example/apix", "https://svc.example/", "https://svc.example:8443/api/x",
		"http://pay:8080/v10", "http://pay/v1/x", "http://pay:8080/v1/../admin",
		"ftp://bank/x", "http://user:pw@bank/x", "/relative", "bank",
	} {
		if err := a.Check(u); err == nil {
			t.Errorf("%s allowed", u)
		}
	}
	if err := a.Check("http://user:secret@bank/x"); err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("user information: %v", err)
	}
	for _, bad := range []string{"bank/x", "ftp://bank", "http://bank/x?y", "a b"} {
		if _, err := ParseAllowList([]string{bad}); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	var none *AllowList
	if err := none.Check("http://bank/x"); err == nil {
		t.Error("a nil list allowed a URL")
	}
}

func TestClassifyLikeDTM(t *testing.T) {
	for _, c := range []struct {
		status int
		body   string
		want   class
	}{
		{200, `{"dtm_result":"SUCCESS"}`, classSuccess},
		{200, "", classSuccess},
		{200, `{"dtm_result":"FAILURE"}`, classFailure},
		{409, "", classFailure},
		{425, "", classOngoing},
		{200, `{"dtm_result":"ONGOING"}`, classOngoing},
		{409, `ONGOING`, classOngoing}, // DTM checks ONGOING first
		{500, "", classTransient},
		{404, "FAILURE", classFailure},
		{201, "", classTransient},
	} {
		if got := classify(c.status, []byte(c.body)); got != c.want {
			t.Errorf("%d %q: %v, want %v", c.status, c.body, got, c.want)
		}
	}
}

func TestPayloadValidation(t *testing.T) {
	for _, c := range []struct{ raw, want string }{
		{``, "missing"},
		{`{"action":"ftp://x/y"}`, "payload.action"},
		{`{"action":"http://x/y","compensate":"x"}`, "payload.compensate"},
		{`{"action":"http://x/y","headers":{"a b":"1"}}`, "payload.headers"},
		{`{"action":"http://x/y","nope":1}`, "unknown field"},
		{`{"action":"http://x/y","request_timeout_ms":-1}`, "negative"},
	} {
		_, err := DecodePayload([]byte(c.raw))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.raw, err, c.want)
		}
	}
}
