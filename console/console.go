package console

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/jetsaga/jetsaga/orchestrator"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Config configures a console.
type Config struct {
	// Client reads the sagas and sends the operator's actions. Required.
	Client *orchestrator.Client
	// ReadOnly hides the actions and refuses them: for deployments where the
	// console must not write.
	ReadOnly bool
	// Token, if not empty, is required on every request: as
	// "Authorization: Bearer <token>", or once as ?token=<token> in a
	// browser's address bar (the console then keeps it in a cookie).
	Token string
	// Users, if not empty, are the user names and passwords of HTTP basic
	// authentication, required on every request (a valid Token also
	// admits). The user name is the identity recorded with each action.
	Users map[string]string
	// Operator is the identity an action is recorded with when no basic
	// authentication names the user: the confirmation form asks for it,
	// with this as its default. Default: "operator".
	Operator string
	// Minutes is how many minutes the overview's rate chart shows.
	// Default: 15.
	Minutes int
	// Logger receives the errors of requests. Default: discarded.
	Logger *slog.Logger
}

func (c *Config) validate() error {
	if c.Client == nil {
		return errors.New("console: Config.Client is required")
	}
	if c.Minutes < 0 || c.Minutes > 24*60 {
		return fmt.Errorf("console: Config.Minutes must be between 0 and 1440, got %d", c.Minutes)
	}
	for u, p := range c.Users {
		if u == "" || strings.Contains(u, ":") || p == "" {
			return fmt.Errorf("console: Config.Users: user %q needs a name without ':' and a password", u)
		}
	}
	return nil
}

// Console is the web console: an http.Handler. Close releases its index.
type Console struct {
	cfg    Config
	client *orchestrator.Client
	index  *orchestrator.Index
	tmpl   *template.Template
	static http.Handler
	mux    *http.ServeMux
	cop    *http.CrossOriginProtection
	log    *slog.Logger
}

// New reads the state bucket into an index (see [orchestrator.Index]) and
// returns the console. It returns once the bucket has been read.
func New(ctx context.Context, cfg Config) (*Console, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Operator == "" {
		cfg.Operator = "operator"
	}
	if cfg.Minutes == 0 {
		cfg.Minutes = 15
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	tmpl, err := template.New("").Funcs(funcs).ParseFS(templateFS, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("console: templates: %w", err)
	}
	ix, err := cfg.Client.Index(ctx)
	if err != nil {
		return nil, fmt.Errorf("console: read the state bucket: %w", err)
	}
	sub, _ := fs.Sub(staticFS, "static")
	c := &Console{cfg: cfg, client: cfg.Client, index: ix, tmpl: tmpl, static: http.FileServerFS(sub),
		mux: http.NewServeMux(), cop: http.NewCrossOriginProtection(), log: cfg.Logger}
	c.routes()
	return c, nil
}

// Close stops the console's index.
func (c *Console) Close() { c.index.Close() }

func (c *Console) routes() {
	m := c.mux
	m.HandleFunc("GET /{$}", c.overview)
	m.HandleFunc("GET /sagas", c.list)
	m.HandleFunc("GET /sagas/{id}", c.saga)
	m.HandleFunc("GET /sagas/{id}/live", c.live)
	m.HandleFunc("GET /sagas/{id}/act/{action}", c.confirm)
	m.HandleFunc("POST /sagas/{id}/act/{action}", c.act)
	m.Handle("GET /static/", http.StripPrefix("/static/", c.static))
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		c.fail(w, r, http.StatusNotFound, "no such page: "+r.URL.Path)
	})
}

// csp allows the console's own scripts, styles and requests only: nothing
// inline, nothing from elsewhere.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// ServeHTTP serves the console: security headers, then authentication, then
// (for actions) the cross-origin and CSRF checks, then the page.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	if r.URL.Path == "/healthz" {
		c.mux.ServeHTTP(w, r)
		return
	}
	user, ok := c.authenticate(w, r)
	if !ok {
		return
	}
	r = r.WithContext(context.WithValue(r.Context(), userKey{}, user))
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		if err := c.cop.Check(r); err != nil {
			c.fail(w, r, http.StatusForbidden, "cross-origin request refused: actions are taken from the console's own pages")
			return
		}
		if !c.sameOrigin(r) {
			c.fail(w, r, http.StatusForbidden, "cross-origin request refused: the Origin header does not name this console")
			return
		}
	}
	c.mux.ServeHTTP(w, r)
}

// sameOrigin checks the Origin (or Referer) of an action against the Host
// it was sent to, when the browser sent one: http.CrossOriginProtection
// trusts a request whose browser sends Sec-Fetch-Site, and older browsers
// send only Origin.
func (c *Console) sameOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		origin = r.Header.Get("Referer")
	}
	if origin == "" {
		return true // a client that is not a browser: the CSRF token still applies
	}
	u, err := url.Parse(origin)
	return err == nil && strings.EqualFold(u.Host, r.Host)
}

type userKey struct{}

// authenticate checks the request's credentials when the console requires
// some; it returns the basic-auth user name ("" for a token or no
// authentication) and false when it has answered the request itself.
func (c *Console) authenticate(w http.ResponseWriter, r *http.Request) (string, bool) {
	if c.cfg.Token == "" && len(c.cfg.Users) == 0 {
		return "", true
	}
	if u, p, ok := r.BasicAuth(); ok && len(c.cfg.Users) > 0 {
		if want, known := c.cfg.Users[u]; known && subtle.ConstantTimeCompare([]byte(p), []byte(want)) == 1 {
			return u, true
		}
	}
	if c.cfg.Token != "" {
		if q := r.URL.Query().Get("token"); q != "" && c.tokenOK(q) && r.Method == http.MethodGet {
			// From the address bar: keep it in a cookie and drop it from
			// the URL (and from the history).
			http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: q, Path: "/", HttpOnly: true,
				SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
			u := *r.URL
			v := u.Query()
			v.Del("token")
			u.RawQuery = v.Encode()
			http.Redirect(w, r, u.RequestURI(), http.StatusSeeOther)
			return "", false
		}
		if t, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && c.tokenOK(t) {
			return "", true
		}
		if ck, err := r.Cookie(tokenCookie); err == nil && c.tokenOK(ck.Value) {
			return "", true
		}
	}
	if len(c.cfg.Users) > 0 {
		w.Header().Set("WWW-Authenticate", `Basic realm="jetsaga console", charset="UTF-8"`)
	}
	c.fail(w, r, http.StatusUnauthorized, "authentication required: "+c.authHint())
	return "", false
}

func (c *Console) authHint() string {
	switch {
	case c.cfg.Token != "" && len(c.cfg.Users) > 0:
		return "a user name and password, or the console's token (open the URL with ?token=…)"
	case c.cfg.Token != "":
		return "open the URL with ?token=… (the console's token), or send Authorization: Bearer …"
	}
	return "a user name and password"
}

const (
	tokenCookie = "jetsaga_token"
	csrfCookie  = "jetsaga_csrf"
)

func (c *Console) tokenOK(t string) bool {
	return subtle.ConstantTimeCompare([]byte(t), []byte(c.cfg.Token)) == 1
}

// csrfToken returns the request's CSRF token, setting a new one in a
// cookie if it has none: forms carry it back and actions must match it.
func csrfToken(w http.ResponseWriter, r *http.Request) string {
	if ck, err := r.Cookie(csrfCookie); err == nil && len(ck.Value) == 32 {
		return ck.Value
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	t := hex.EncodeToString(b[:])
	http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: t, Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	return t
}

// csrfOK checks an action's form token against its cookie.
func csrfOK(r *http.Request) bool {
	ck, err := r.Cookie(csrfCookie)
	form := r.PostFormValue("csrf")
	return err == nil && len(ck.Value) == 32 && subtle.ConstantTimeCompare([]byte(ck.Value), []byte(form)) == 1
}

// fail answers with an error page.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, code int, msg string) {
	if code >= 500 {
		c.log.Error("console request failed", "path", r.URL.Path, "err", msg)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_ = c.tmpl.ExecuteTemplate(w, "error.html", &page{Title: http.StatusText(code), ReadOnly: c.cfg.ReadOnly,
		Data: errorPage{Code: code, Message: msg}})
}

type errorPage struct {
	Code    int
	Message string
}

// IsLoopback reports whether a listen address only accepts connections from
// this machine (127.0.0.0/8, ::1, localhost): there the console may run
// without authentication.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// timeout bounds the reads of one page.
const timeout = 15 * time.Second
