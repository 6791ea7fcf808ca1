package bank

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// MaxCents is the largest amount an account can hold: numeric(12,2) goes up
// to 9,999,999,999.99.
const MaxCents Cents = 999_999_999_999

// Cents is an exact amount of money in cents. In JSON it is a decimal
// string with at most two decimals ("30.00", "30.5", "30"); JSON numbers are
// refused, because a float cannot hold every amount exactly.
type Cents int64

// ParseCents parses a decimal amount: an optional '-', at least one digit,
// and optionally '.' followed by one or two digits. Its magnitude is at most
// MaxCents.
func ParseCents(s string) (Cents, error) {
	body, neg := strings.CutPrefix(s, "-")
	whole, frac, hasDot := strings.Cut(body, ".")
	switch {
	case whole == "":
		return 0, fmt.Errorf("amount %q: want digits before the decimal point, e.g. \"30.00\"", s)
	case !allDigits(whole):
		return 0, fmt.Errorf("amount %q: want a decimal number such as \"30.00\"", s)
	case hasDot && (frac == "" || !allDigits(frac)):
		return 0, fmt.Errorf("amount %q: want one or two digits after the decimal point", s)
	case len(frac) > 2:
		return 0, fmt.Errorf("amount %q: has %d decimals, at most 2 are allowed", s, len(frac))
	case len(whole) > 10:
		return 0, fmt.Errorf("amount %q: is above the maximum %s", s, MaxCents)
	}
	w, err := strconv.ParseInt(whole, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("amount %q: %w", s, err)
	}
	f := int64(0)
	if frac != "" {
		f, _ = strconv.ParseInt(frac, 10, 64)
		if len(frac) == 1 {
			f *= 10
		}
	}
	c := Cents(w*100 + f)
	if c > MaxCents {
		return 0, fmt.Errorf("amount %q: is above the maximum %s", s, MaxCents)
	}
	if neg {
		c = -c
	}
	return c, nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// String formats c with two decimals: "30.00", "-0.05".
func (c Cents) String() string {
	sign := ""
	u := uint64(c)
	if c < 0 {
		sign, u = "-", uint64(-c)
	}
	return fmt.Sprintf("%s%d.%02d", sign, u/100, u%100)
}

// MarshalJSON encodes c as a decimal string.
func (c Cents) MarshalJSON() ([]byte, error) { return json.Marshal(c.String()) }

// UnmarshalJSON decodes a decimal string; a JSON number is an error.
func (c *Cents) UnmarshalJSON(b []byte) error {
	if len(b) == 0 || b[0] != '"' {
		return errors.New("amount: want a decimal string such as \"30.00\", not a JSON number or other value")
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("amount: %w", err)
	}
	v, err := ParseCents(s)
	if err != nil {
		return err
	}
	*c = v
	return nil
}
