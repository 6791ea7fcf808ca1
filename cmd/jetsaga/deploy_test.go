package main

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/internal/testenv"
	"github.com/jetsaga/jetsaga/orchestrator"
)

// deployDir is the repository's deploy/ directory, seen from this package.
var deployDir = filepath.Join("..", "..", "deploy")

// deployPasswords are the variables accounts.conf takes from the
// environment.
var deployPasswords = map[string]string{
	"NATS_SYSTEM_PASSWORD":         "sys-pw",
	"JETSAGA_COORDINATOR_PASSWORD": "coordinator-pw",
	"JETSAGA_BANK_A_PASSWORD":      "bank-a-pw",
	"JETSAGA_BANK_B_PASSWORD":      "bank-b-pw",
	"JETSAGA_OPERATOR_PASSWORD":    "operator-pw",
	"JETSAGA_ADMIN_PASSWORD":       "admin-pw",
}

// deployUsers are the users of accounts.conf.
var deployUsers = []string{"coordinator", "bank-a", "bank-b", "operator", "admin"}

// deployPassword is user's password in deployPasswords.
func deployPassword(user string) string {
	return deployPasswords["JETSAGA_"+strings.ToUpper(strings.ReplaceAll(user, "-", "_"))+"_PASSWORD"]
}

// deployInbox is user's inbox prefix, the only inbox accounts.conf lets
// it subscribe to.
func deployInbox(user string) string { return "_INBOX_" + user }

// loadDeployConfig parses one of deploy/'s NATS configurations with the
// server's own parser.
func loadDeployConfig(t *testing.T, name string) *server.Options {
	t.Helper()
	opts, err := server.ProcessConfigFile(filepath.Join(deployDir, name))
	if err != nil {
		t.Fatalf("deploy/%s: %v", name, err)
	}
	return opts
}

// startDeployNATS starts the single-node configuration of deploy/ on a
// random port with its store in a temporary directory.
func startDeployNATS(t *testing.T) *server.Server {
	t.Helper()
	opts := loadDeployConfig(t, "nats-single.conf")
	opts.Host, opts.Port = "127.0.0.1", server.RANDOM_PORT
	opts.HTTPHost, opts.HTTPPort = "127.0.0.1", server.RANDOM_PORT
	opts.StoreDir = t.TempDir()
	opts.NoSigs, opts.NoLog = true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("deploy/nats-single.conf: %v", err)
	}
	srv.Start()
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	if !srv.ReadyForConnections(30 * time.Second) {
		t.Fatal("deploy/nats-single.conf: server not ready")
	}
	return srv
}

// connectAs connects to srv as one of accounts.conf's users, with the
// user's inbox prefix.
func connectAs(t *testing.T, srv *server.Server, user string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	opts = append([]nats.Option{nats.UserInfo(user, deployPassword(user)), nats.CustomInboxPrefix(deployInbox(user))}, opts...)
	nc, err := nats.Connect(srv.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// TestDeployNATSConfigs: the NATS configurations of deploy/ parse, say what
// the deployment needs (JetStream on disk with fsync on every write, the
// cluster's routes, the jetsaga users) and the single-node one runs.
func TestDeployNATSConfigs(t *testing.T) {
	for k, v := range deployPasswords {
		t.Setenv(k, v)
	}
	single := loadDeployConfig(t, "nats-single.conf")
	checkJetStream(t, "nats-single.conf", single)
	names := map[string]bool{}
	for i := 1; i <= 3; i++ {
		name := filepath.Join("nats-cluster", "nats-"+string(rune('0'+i))+".conf")
		o := loadDeployConfig(t, name)
		checkJetStream(t, name, o)
		if o.Cluster.Name != "jetsaga" || o.Cluster.Port == 0 {
			t.Errorf("%s: cluster %q on port %d, want cluster jetsaga with a port", name, o.Cluster.Name, o.Cluster.Port)
		}
		if len(o.Routes) != 3 {
			t.Errorf("%s: %d routes, want the 3 nodes", name, len(o.Routes))
		}
		names[o.ServerName] = true
	}
	if len(names) != 3 {
		t.Errorf("cluster nodes do not have distinct names: %v", names)
	}

	srv := startDeployNATS(t)
	// Every user of accounts.conf can connect, and lands in the JETSAGA
	// account with JetStream.
	for _, user := range deployUsers {
		nc, _ := connectAs(t, srv, user)
		if !nc.IsConnected() {
			t.Fatalf("%s is not connected", user)
		}
	}
	if _, err := nats.Connect(srv.ClientURL(), nats.UserInfo("bank-a", "wrong")); err == nil {
		t.Fatal("a wrong password was accepted")
	}
}

// checkJetStream checks the JetStream settings of a server configuration
// and its users.
func checkJetStream(t *testing.T, name string, o *server.Options) {
	t.Helper()
	if !o.JetStream || !o.SyncAlways || o.StoreDir == "" {
		t.Errorf("%s: jetstream %v, sync always %v, store dir %q: want JetStream on disk with sync_interval always",
			name, o.JetStream, o.SyncAlways, o.StoreDir)
	}
	users := map[string]string{}
	for _, u := range o.Users {
		acc := ""
		if u.Account != nil {
			acc = u.Account.Name
		}
		users[u.Username] = acc
	}
	for _, u := range deployUsers {
		if users[u] != "JETSAGA" {
			t.Errorf("%s: user %s is in account %q, want JETSAGA", name, u, users[u])
		}
	}
}

// TestDeployPermissions runs sagas through the single-node configuration of
// deploy/ with each component connected as its own user of accounts.conf,
// with its own inbox prefix: the permissions are enough for the
// coordinator, the banks, the operator (start, state, timeline, list,
// redrive) and the admin (replay, writing the bucket, deleting a stream),
// and no more: a bank cannot speak for the other one, and the operator can
// neither write the bucket nor change the streams.
func TestDeployPermissions(t *testing.T) {
	for k, v := range deployPasswords {
		t.Setenv(k, v)
	}
	srv := startDeployNATS(t)
	url := srv.ClientURL()
	as := func(user string) []string {
		return []string{"--nats-url", url, "--nats-user", user, "--nats-password", deployPassword(user),
			"--nats-inbox-prefix", deployInbox(user)}
	}
	// The banks start first: they wait for the coordinator's streams.
	dbA, dbB := testenv.PostgresURL(t), testenv.PostgresURL(t)
	bankA := background(t, nil, append([]string{"bank", "--participant", "bank-a", "--database-url", dbA, "--seed"}, as("bank-a")...)...)
	bankB := background(t, nil, append([]string{"bank", "--participant", "bank-b", "--database-url", dbB, "--seed"}, as("bank-b")...)...)
	bankA.waitOutput("waiting for the commands stream")
	coord := background(t, nil, append([]string{"coordinator", "--workers", "4"}, as("coordinator")...)...)
	coord.waitOutput("coordinator running")
	bankA.waitOutput("bank running")
	bankB.waitOutput("bank running")

	// A wrong password is refused with the address.
	r := cli(t, nil, "", "list", "--nats-url", url, "--nats-user", "operator", "--nats-password", "wrong")
	wantOneLineError(t, r, exitError, "cannot connect to NATS at "+url+": ", "Authorization Violation")

	// Each user reads replies only on its own inbox prefix: taken from
	// NATS_INBOX_PREFIX as well as from the flag, checked, and needed.
	login := []string{"--nats-url", url, "--nats-user", "operator", "--nats-password", deployPassword("operator")}
	wantExit(t, cli(t, map[string]string{"NATS_INBOX_PREFIX": deployInbox("operator")}, "", append([]string{"list"}, login...)...), exitOK)
	wantOneLineError(t, cli(t, nil, "", append([]string{"list", "--nats-inbox-prefix", "_INBOX.>"}, login...)...), exitUsage, "--nats-inbox-prefix")
	wantExit(t, cli(t, nil, "", append([]string{"list"}, login...)...), exitError) // replies on _INBOX.*, which it may not read

	// The operator starts a transfer and waits for it, reads its state
	// with its timeline (both streams), lists the sagas.
	r = cli(t, nil, transferJSON(alice, bob, 100), append([]string{"start", "--wait", "-f", "-"}, as("operator")...)...)
	wantExit(t, r, exitOK)
	id := strings.SplitN(r.stdout, "\n", 2)[0]
	var sj statusJSON
	decodeJSON(t, cli(t, nil, "", append([]string{"status", "--json", id}, as("operator")...)...), &sj)
	if sj.State.Status != orchestrator.Committed || len(sj.Timeline) != 5 { // start, 2 commands, 2 outcomes
		t.Fatalf("operator's status of %s: %s with %d timeline entries, want committed with 5", id, sj.State.Status, len(sj.Timeline))
	}
	wantExit(t, cli(t, nil, "", append([]string{"list"}, as("operator")...)...), exitOK)

	// A step of a participant that never answers parks its saga; the
	// operator redrives it (a control message the coordinator acts on:
	// the step is sent again, times out again, and parks the saga again).
	stuck := `{"saga_id": "stuck-1", "name": "stuck", "steps": [{"name": "notify", "participant": "nobody",
	  "action": "Notify", "kind": "retriable", "timeout_ms": 300, "retry": {"max_attempts": 1, "initial_backoff_ms": 100, "max_backoff_ms": 100}}]}`
	wantExit(t, cli(t, nil, stuck, append([]string{"start", "--wait", "-f", "-"}, as("operator")...)...), exitParked)
	wantExit(t, cli(t, nil, "", append([]string{"redrive", "stuck-1"}, as("operator")...)...), exitOK)
	testenv.CheckFor(t, waitTotal, waitStep, func() error {
		var sj statusJSON
		decodeJSON(t, cli(t, nil, "", append([]string{"status", "--json", "stuck-1"}, as("operator")...)...), &sj)
		commands := 0
		for _, e := range sj.Timeline {
			if e.Kind == events.KindCommand {
				commands++
			}
		}
		if sj.State.Status != orchestrator.Parked || commands != 2 {
			return errors.New("the redrive has not sent the step again and parked the saga")
		}
		return nil
	})

	// The saga API, served by the coordinator: the operator and the admin
	// call it and discover it; a bank may not.
	for _, user := range []string{"operator", "admin"} {
		nc, _ := connectAs(t, srv, user)
		msg, err := nc.Request("saga.api.get", []byte(`{"id":"`+id+`"}`), 10*time.Second)
		if err != nil || msg.Header.Get(micro.ErrorCodeHeader) != "" || !strings.Contains(string(msg.Data), `"status":"committed"`) {
			t.Fatalf("%s: saga.api.get %s: %v %v %s", user, id, err, msg.Header, msg.Data)
		}
		msg, err = nc.Request("saga.api.get", []byte(`{"id":"nope"}`), 10*time.Second)
		if err != nil || msg.Header.Get(micro.ErrorCodeHeader) != "404" {
			t.Fatalf("%s: saga.api.get of an unknown id: %v %v", user, err, msg)
		}
		msg, err = nc.Request("$SRV.INFO.jetsaga", nil, 10*time.Second)
		if err != nil || !strings.Contains(string(msg.Data), `"saga.api.redrive"`) {
			t.Fatalf("%s: $SRV.INFO.jetsaga: %v %v", user, err, msg)
		}
	}
	bankProbe := newPermProbe(t, srv, "bank-a")
	for _, subj := range []string{"saga.api.get", "saga.api.redrive", "$SRV.INFO.jetsaga"} {
		t.Run("bank-a request "+subj, func(t *testing.T) { bankProbe.on(t).requestRefused(subj, []byte(`{"id":"x"}`)) })
	}

	// A bank may not publish another bank's outcomes nor commands; the
	// operator may not publish commands, outcomes, nor states.
	for user, subjects := range map[string][]string{
		"bank-a":   {"saga.evt.bank-b.x", "saga.cmd.bank-a.x"},
		"operator": {"saga.cmd.bank-a.x", "saga.evt.bank-a.x", "$KV.saga_state." + id},
	} {
		p := newPermProbe(t, srv, user)
		for _, subj := range subjects {
			t.Run(user+" publish "+subj, func(t *testing.T) { p.on(t).publishRefused(subj, []byte("{}")) })
		}
	}

	// Nor may the operator change the bucket or the streams through the
	// API, nor take over the coordinator's or a participant's consumer.
	op := newPermProbe(t, srv, "operator")
	for _, subj := range []string{
		"$JS.API.STREAM.DELETE." + events.BucketStream("saga_state"),
		"$JS.API.STREAM.DELETE.SAGAS",
		"$JS.API.STREAM.UPDATE.SAGA_CMDS",
		"$JS.API.STREAM.CREATE.EVIL",
		"$JS.API.STREAM.PURGE.SAGAS",
		"$JS.API.STREAM.MSG.DELETE." + events.BucketStream("saga_state"),
		"$JS.API.CONSUMER.DELETE.SAGAS.saga_coordinator",
		"$JS.API.CONSUMER.CREATE.SAGAS.saga_coordinator",
		"$JS.API.CONSUMER.MSG.NEXT.SAGAS.saga_coordinator",
		"$JS.API.CONSUMER.CREATE.SAGA_CMDS.saga_participant_bank-a.saga.cmd.bank-b.*",
		"$JS.API.CONSUMER.DELETE.SAGA_CMDS.saga_participant_bank-b",
	} {
		t.Run("operator "+subj, func(t *testing.T) { op.on(t).requestRefused(subj, []byte("{}")) })
	}

	// The operator may not replay (it creates and deletes a bucket); the
	// admin may, and compares with the live bucket.
	r = cli(t, nil, "", append([]string{"replay"}, as("operator")...)...)
	wantExit(t, r, exitError)
	wantExit(t, cli(t, nil, "", append([]string{"replay", "--compare"}, as("admin")...)...), exitOK)

	for _, b := range []*bg{bankA, bankB, coord} {
		b.stop()
	}

	// The admin may write the bucket (here: a hand-written state) and
	// delete a stream.
	_, ajs := connectAs(t, srv, "admin")
	kv, err := ajs.KeyValue(t.Context(), "saga_state")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(t.Context(), "admin-probe", []byte(`{}`)); err != nil {
		t.Fatalf("admin writes the bucket: %v", err)
	}
	if err := ajs.DeleteStream(t.Context(), events.BucketStream("saga_state_replay")); err != nil {
		t.Fatalf("admin deletes a stream: %v", err)
	}
}

// TestDeployParticipantIsolation: with deploy/accounts.conf a participant
// reads its own commands and nothing else, through every form of the
// JetStream API that could hand it another participant's: consumers
// created, re-created or updated with another filter (with and without the
// filter in the subject, durable and ephemeral, legacy forms, push
// consumers), the other participant's consumer, message gets, and the
// inbox on which the other participant's pulled commands arrive.
func TestDeployParticipantIsolation(t *testing.T) {
	for k, v := range deployPasswords {
		t.Setenv(k, v)
	}
	srv := startDeployNATS(t)
	ctx := t.Context()
	ns, err := events.NewNamespace(events.DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	_, cjs := connectAs(t, srv, "coordinator")
	if err := orchestrator.EnsureStreams(ctx, cjs, ns, events.StreamOptions{Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	secret := []byte(`{"for": "bank-b only"}`)
	for _, subj := range []string{ns.Command("bank-a", "s1"), ns.Command("bank-b", "s1")} {
		if _, err := cjs.Publish(ctx, subj, secret); err != nil {
			t.Fatal(err)
		}
	}

	// bank-a creates its consumer the way the participants package does.
	_, ajs := connectAs(t, srv, "bank-a")
	own := jetstream.ConsumerConfig{Durable: ns.ParticipantConsumer("bank-a"), FilterSubject: ns.CommandFilter("bank-a"),
		AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy, MaxDeliver: -1}
	if _, err := ajs.CreateOrUpdateConsumer(ctx, ns.CommandsStream(), own); err != nil {
		t.Fatalf("bank-a creates its consumer: %v", err)
	}

	a := newPermProbe(t, srv, "bank-a")
	stream, durable := ns.CommandsStream(), ns.ParticipantConsumer("bank-a")
	other := ns.CommandFilter("bank-b")
	steal := own
	steal.FilterSubject = other
	create := "$JS.API.CONSUMER.CREATE." + stream + "."
	// Refused by the subject permissions.
	for _, c := range []struct {
		name, subject, action string
		cfg                   jetstream.ConsumerConfig
	}{
		{"its durable re-created with bank-b's filter", create + durable + "." + other, "", steal},
		{"its durable updated with bank-b's filter", create + durable + "." + other, "update", steal},
		{"its durable re-created with a wider filter", create + durable + ".saga.cmd.>", "", withFilter(own, "saga.cmd.>")},
		{"its durable, filter not in the subject", create + durable, "", steal},
		{"its durable updated, filter not in the subject", create + durable, "update", steal},
		{"its durable, filters not in the subject", create + durable, "", withFilters(own, other)},
		{"its durable as a push consumer", create + durable + "." + other, "", withDeliver(steal, deployInbox("bank-a")+".push")},
		{"legacy durable create", "$JS.API.CONSUMER.DURABLE.CREATE." + stream + "." + durable, "", steal},
		{"legacy ephemeral create", "$JS.API.CONSUMER.CREATE." + stream, "", ephemeral(steal)},
		{"ephemeral with bank-b's filter", create + "steal." + other, "", ephemeral(steal)},
		{"ephemeral push consumer", create + "steal", "", withDeliver(ephemeral(steal), deployInbox("bank-a")+".push")},
		{"bank-b's durable", create + ns.ParticipantConsumer("bank-b") + "." + other, "", withDurable(steal, ns.ParticipantConsumer("bank-b"))},
	} {
		t.Run(c.name, func(t *testing.T) {
			a.on(t).requestRefused(c.subject, consumerRequest(t, stream, c.action, c.cfg))
		})
	}
	for _, req := range []struct{ subject, body string }{
		{"$JS.API.CONSUMER.MSG.NEXT." + stream + "." + ns.ParticipantConsumer("bank-b"), `{"batch": 1}`},
		{"$JS.API.CONSUMER.INFO." + stream + "." + ns.ParticipantConsumer("bank-b"), ``},
		{"$JS.API.DIRECT.GET." + stream, `{"last_by_subj": "` + ns.Command("bank-b", "s1") + `"}`},
		{"$JS.API.DIRECT.GET." + stream + "." + ns.Command("bank-b", "s1"), ``},
		{"$JS.API.STREAM.MSG.GET." + stream, `{"last_by_subj": "` + ns.Command("bank-b", "s1") + `"}`},
		{"$JS.API.STREAM.MSG.GET." + stream, `{"seq": 2}`},
	} {
		t.Run(req.subject, func(t *testing.T) { a.on(t).requestRefused(req.subject, []byte(req.body)) })
	}
	// Allowed by the subject permissions, refused by the server: the
	// filter of the request must be the one in the subject.
	ownSubject := create + durable + "." + own.FilterSubject
	a.apiError(ownSubject, consumerRequest(t, stream, "", steal), 10131)                         // filter mismatch
	a.apiError(ownSubject, consumerRequest(t, stream, "update", steal), 10131)                   // filter mismatch
	a.apiError(ownSubject, consumerRequest(t, stream, "", withFilters(own, other)), 10137)       // multiple filters
	a.apiError(ownSubject, consumerRequest(t, stream, "", withFilter(own, "saga.cmd.>")), 10131) // wider filter

	// The inbox: bank-a may not subscribe where bank-b's pulled commands
	// arrive (nor to the shared prefix, nor to everything).
	for _, subj := range []string{"_INBOX.>", deployInbox("bank-b") + ".>", ">", "saga.cmd.bank-b.>"} {
		t.Run("subscribe "+subj, func(t *testing.T) { a.on(t).subscribeRefused(subj) })
	}
	// bank-b pulls its command on its own inbox.
	_, bjs := connectAs(t, srv, "bank-b")
	bcons, err := bjs.CreateOrUpdateConsumer(ctx, stream, withDurable(withFilter(own, other), ns.ParticipantConsumer("bank-b")))
	if err != nil {
		t.Fatalf("bank-b creates its consumer: %v", err)
	}
	m, err := bcons.Next(jetstream.FetchMaxWait(waitTotal))
	if err != nil || m.Subject() != ns.Command("bank-b", "s1") {
		t.Fatalf("bank-b pulls its command: %v", err)
	}
	if err := m.Ack(); err != nil {
		t.Fatal(err)
	}

	// Through its own consumer bank-a still reads its commands, and only
	// those.
	acons, err := ajs.Consumer(ctx, stream, durable)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := acons.Fetch(10, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for m := range batch.Messages() {
		got = append(got, m.Subject())
	}
	if len(got) != 1 || got[0] != ns.Command("bank-a", "s1") {
		t.Fatalf("bank-a's consumer delivered %v, want only %s", got, ns.Command("bank-a", "s1"))
	}
}

func withFilter(c jetstream.ConsumerConfig, f string) jetstream.ConsumerConfig {
	c.FilterSubject = f
	return c
}

func withFilters(c jetstream.ConsumerConfig, fs ...string) jetstream.ConsumerConfig {
	c.FilterSubject, c.FilterSubjects = "", fs
	return c
}

func withDeliver(c jetstream.ConsumerConfig, subj string) jetstream.ConsumerConfig {
	c.DeliverSubject, c.AckPolicy = subj, jetstream.AckNonePolicy
	return c
}

func withDurable(c jetstream.ConsumerConfig, name string) jetstream.ConsumerConfig {
	c.Durable = name
	return c
}

func ephemeral(c jetstream.ConsumerConfig) jetstream.ConsumerConfig {
	c.Durable = ""
	return c
}

// consumerRequest is the body of a consumer create or update request.
func consumerRequest(t *testing.T, stream, action string, cfg jetstream.ConsumerConfig) []byte {
	t.Helper()
	b, err := json.Marshal(struct {
		Stream string                   `json:"stream_name"`
		Config jetstream.ConsumerConfig `json:"config"`
		Action string                   `json:"action,omitempty"`
	}{stream, cfg, action})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// permProbe is a connection as one user of accounts.conf that collects the
// permissions violations the server reports.
type permProbe struct {
	t    *testing.T
	user string
	nc   *nats.Conn
	errs chan error
}

func newPermProbe(t *testing.T, srv *server.Server, user string) *permProbe {
	t.Helper()
	p := &permProbe{t: t, user: user, errs: make(chan error, 64)}
	p.nc, _ = connectAs(t, srv, user, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case p.errs <- err:
		default:
		}
	}))
	return p
}

// on returns the probe reporting to t (a subtest).
func (p *permProbe) on(t *testing.T) *permProbe {
	q := *p
	q.t = t
	return &q
}

// violation waits for the server's permissions violation for what on
// subject ("Publish" or "Subscription"); other errors are skipped.
func (p *permProbe) violation(what, subject string, answered <-chan *nats.Msg) {
	p.t.Helper()
	want := "Permissions Violation for " + what + ` to "` + subject + `"`
	timeout := time.After(waitTotal)
	for {
		select {
		case err := <-p.errs:
			if strings.Contains(err.Error(), want) {
				return
			}
		case m := <-answered:
			p.t.Fatalf("%s: %s %s was answered: %s", p.user, what, subject, m.Data)
		case <-timeout:
			p.t.Fatalf("%s: no permissions violation for %s %s", p.user, what, subject)
		}
	}
}

// publishRefused publishes on subject and wants a permissions violation.
func (p *permProbe) publishRefused(subject string, data []byte) {
	p.t.Helper()
	if err := p.nc.Publish(subject, data); err != nil {
		p.t.Fatal(err)
	}
	p.violation("Publish", subject, nil)
}

// requestRefused sends a request on subject and wants a permissions
// violation, and no answer.
func (p *permProbe) requestRefused(subject string, data []byte) {
	p.t.Helper()
	answered := make(chan *nats.Msg, 1)
	sub, err := p.nc.ChanSubscribe(p.nc.NewRespInbox(), answered)
	if err != nil {
		p.t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := p.nc.PublishRequest(subject, sub.Subject, data); err != nil {
		p.t.Fatal(err)
	}
	p.violation("Publish", subject, answered)
}

// subscribeRefused subscribes to subject and wants a permissions violation.
func (p *permProbe) subscribeRefused(subject string) {
	p.t.Helper()
	received := make(chan *nats.Msg, 1)
	sub, err := p.nc.ChanSubscribe(subject, received)
	if err != nil {
		p.t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	p.violation("Subscription", subject, received)
}

// apiError sends a request the permissions allow and wants the JetStream
// API's error code errCode in the answer.
func (p *permProbe) apiError(subject string, data []byte, errCode int) {
	p.t.Helper()
	m, err := p.nc.Request(subject, data, waitTotal)
	if err != nil {
		p.t.Fatalf("%s: request on %s: %v", p.user, subject, err)
	}
	var resp struct {
		Error *struct {
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		p.t.Fatalf("%s: answer on %s: %v: %s", p.user, subject, err, m.Data)
	}
	if resp.Error == nil || resp.Error.ErrCode != errCode {
		p.t.Fatalf("%s: %s answered %s, want error %d", p.user, subject, m.Data, errCode)
	}
}
