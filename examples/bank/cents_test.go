package bank

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestParseCents(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want Cents
	}{
		{"30.00", 3000}, {"30", 3000}, {"30.5", 3050}, {"30.05", 3005}, {"0.01", 1}, {"0", 0},
		{"-5.00", -500}, {"007.10", 710}, {"9999999999.99", MaxCents}, {"-9999999999.99", -MaxCents},
	} {
		got, err := ParseCents(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseCents(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"", "digits before"}, {"-", "digits before"}, {".5", "digits before"}, {"5.", "after the decimal point"},
		{"30.001", "3 decimals"}, {"1e3", "decimal number"}, {"+5", "decimal number"}, {" 5", "decimal number"},
		{"5 ", "decimal number"}, {"abc", "decimal number"}, {"1.2.3", "after the decimal point"}, {"--5", "decimal number"},
		{"10000000000.00", "above the maximum"}, {"99999999999999999999", "above the maximum"}, {"٣", "decimal number"},
	} {
		got, err := ParseCents(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseCents(%q) = %d, %v; want an error containing %q", tc.in, got, err, tc.want)
		}
	}
}

func TestCentsJSON(t *testing.T) {
	t.Parallel()
	var r TransferReq
	if err := json.Unmarshal([]byte(`{"user_id":7,"amount":"30.5"}`), &r); err != nil || r.Amount != 3050 || r.UserID != 7 {
		t.Fatalf("decode = %+v, %v", r, err)
	}
	b, err := json.Marshal(r)
	if err != nil || string(b) != `{"user_id":7,"amount":"30.50"}` {
		t.Fatalf("encode = %s, %v", b, err)
	}
	for _, in := range []string{`30.5`, `3050`, `null`, `true`, `"30.555"`, `["1"]`} {
		var c Cents
		if err := json.Unmarshal([]byte(in), &c); err == nil {
			t.Errorf("Unmarshal(%s) = %d, want an error", in, c)
		}
	}
	for _, tc := range []struct {
		r    TransferReq
		want string
	}{
		{TransferReq{UserID: 1, Amount: 0}, "amount: is 0.00, must be > 0"},
		{TransferReq{UserID: 1, Amount: -500}, "amount: is -5.00, must be > 0"},
		{TransferReq{UserID: 0, Amount: 1}, "user_id: is 0"},
	} {
		if err := tc.r.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.r, err, tc.want)
		}
	}
	if err := (TransferReq{UserID: 1, Amount: 1}).Validate(); err != nil {
		t.Errorf("Validate of a good request: %v", err)
	}
}

// FuzzParseCents: parsing never panics, and whatever parses formats back to
// a string that parses to the same amount, in JSON too.
func FuzzParseCents(f *testing.F) {
	for _, s := range []string{"30.00", "0.01", "-5", "1e3", "30.001", "9999999999.99", "10000000000", ".", "-.5", "5."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCents(s)
		if err != nil {
			return
		}
		if c > MaxCents || c < -MaxCents {
			t.Fatalf("ParseCents(%q) = %d, beyond the maximum", s, c)
		}
		back, err := ParseCents(c.String())
		if err != nil || back != c {
			t.Fatalf("ParseCents(%q) = %d; its String %q parses to %d, %v", s, c, c.String(), back, err)
		}
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		var j Cents
		if err := json.Unmarshal(b, &j); err != nil || j != c {
			t.Fatalf("JSON round trip of %d: %s → %d, %v", c, b, j, err)
		}
	})
}
