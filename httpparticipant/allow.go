package httpparticipant

import (
	"fmt"
	"net/url"
	"strings"
)

// AllowList says which URLs HTTP steps may call, so that whoever can
// publish a start cannot use the participant as an open proxy into the
// network. Its entries are either a host (`svc`, `svc:8080`,
// `127.0.0.1:5000`): any http or https URL on exactly that host and port
// (no port: any port), or a URL prefix (`https://svc/api/`): same scheme,
// host and port, and a path that starts with the prefix's path at a
// segment boundary. The zero value allows nothing.
type AllowList struct {
	entries []allowEntry
	text    []string
}

type allowEntry struct {
	scheme, host, port string // lower case; port "" = any (host entries) or the scheme's default (prefixes)
	anyPort            bool
	path               string // prefixes: the path prefix ("" or ending with or without '/')
	prefix             bool
}

// ParseAllowList parses entries (hosts or URL prefixes; see [AllowList]).
// Empty entries are skipped.
func ParseAllowList(entries []string) (*AllowList, error) {
	a := &AllowList{}
	for i, raw := range entries {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			continue
		}
		e, err := parseAllowEntry(raw)
		if err != nil {
			return nil, fmt.Errorf("allowed URL %d (%q): %v", i+1, raw, err)
		}
		a.entries = append(a.entries, e)
		a.text = append(a.text, raw)
	}
	return a, nil
}

// MustAllow is ParseAllowList that panics, for tests and constants.
func MustAllow(entries ...string) *AllowList {
	a, err := ParseAllowList(entries)
	if err != nil {
		panic(err)
	}
	return a
}

// Empty reports whether the list allows nothing.
func (a *AllowList) Empty() bool { return a == nil || len(a.entries) == 0 }

// String lists the entries, comma-separated.
func (a *AllowList) String() string {
	if a == nil {
		return ""
	}
	return strings.Join(a.text, ",")
}

func parseAllowEntry(raw string) (allowEntry, error) {
	if strings.Contains(raw, "://") {
		u, err := ParseURL(raw)
		if err != nil {
			return allowEntry{}, err
		}
		if u.RawQuery != "" || u.Fragment != "" {
			return allowEntry{}, fmt.Errorf("a prefix has no query or fragment")
		}
		e := allowEntry{scheme: u.Scheme, host: strings.ToLower(u.Hostname()), port: effectivePort(u), path: u.EscapedPath(), prefix: true}
		return e, nil
	}
	if strings.ContainsAny(raw, "/?#@ ") {
		return allowEntry{}, fmt.Errorf("neither a host[:port] nor an http(s) URL prefix")
	}
	u, err := url.Parse("http://" + raw)
	if err != nil || u.Hostname() == "" {
		return allowEntry{}, fmt.Errorf("not a valid host[:port]")
	}
	e := allowEntry{host: strings.ToLower(u.Hostname()), port: u.Port()}
	e.anyPort = e.port == ""
	return e, nil
}

func effectivePort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if u.Scheme == "https" {
		return "443"
	}
	return "80"
}

// Check returns nil if raw is a URL that HTTP steps may call, else an error
// that says why.
func (a *AllowList) Check(raw string) error {
	u, err := ParseURL(raw)
	if err != nil {
		return err
	}
	return a.CheckURL(u)
}

// CheckURL is Check for a parsed URL (redirects are checked with it).
func (a *AllowList) CheckURL(u *url.URL) error {
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%q is not an http or https URL", redactURL(u))
	}
	if u.User != nil {
		return fmt.Errorf("%q carries user information, which is not allowed", redactURL(u))
	}
	if a != nil {
		host, port := strings.ToLower(u.Hostname()), effectivePort(u)
		for _, e := range a.entries {
			if e.host != host {
				continue
			}
			if !e.prefix {
				if e.anyPort || e.port == port {
					return nil
				}
				continue
			}
			if e.scheme != u.Scheme || e.port != port {
				continue
			}
			if pathUnder(u.EscapedPath(), e.path) {
				return nil
			}
		}
	}
	return fmt.Errorf("%q is not in the allowed URLs (%s)", redactURL(u), a.String())
}

// pathUnder reports whether path starts with prefix at a segment boundary.
func pathUnder(path, prefix string) bool {
	if prefix == "" || prefix == "/" {
		return true
	}
	if path == "" {
		path = "/"
	}
	if strings.Contains(path, "/../") || strings.HasSuffix(path, "/..") {
		return false
	}
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	if strings.HasSuffix(prefix, "/") || len(path) == len(prefix) {
		return true
	}
	return path[len(prefix)] == '/'
}
