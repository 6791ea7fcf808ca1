package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/jetsaga/jetsaga/internal/testenv"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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
}

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

// connectAs connects to srv as one of accounts.conf's users.
func connectAs(t *testing.T, srv *server.Server, user string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo(user, deployPasswords["JETSAGA_"+strings.ToUpper(strings.ReplaceAll(user, "-", "_"))+"_PASSWORD"]))
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
	for _, user := range []string{"coordinator", "bank-a", "bank-b", "operator"} {
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
	for _, u := range []string{"coordinator", "bank-a", "bank-b", "operator"} {
		if users[u] != "JETSAGA" {
			t.Errorf("%s: user %s is in account %q, want JETSAGA", name, u, users[u])
		}
	}
}

// TestDeployPermissions runs a transfer through the single-node
// configuration of deploy/ with each component connected as its own user
// of accounts.conf: the permissions are enough for the coordinator, the
// banks and the operator, and a bank cannot speak for the other one.
func TestDeployPermissions(t *testing.T) {
	for k, v := range deployPasswords {
		t.Setenv(k, v)
	}
	srv := startDeployNATS(t)
	url := srv.ClientURL()
	as := func(user string) []string {
		return []string{"--nats-url", url, "--nats-user", user, "--nats-password",
			deployPasswords["JETSAGA_"+strings.ToUpper(strings.ReplaceAll(user, "-", "_"))+"_PASSWORD"]}
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

	r = cli(t, nil, transferJSON(alice, bob, 100), append([]string{"start", "--wait", "-f", "-"}, as("operator")...)...)
	wantExit(t, r, exitOK)
	id := strings.SplitN(r.stdout, "\n", 2)[0]
	for _, args := range [][]string{{"status", id}, {"list"}, {"replay", "--compare"}} {
		wantExit(t, cli(t, nil, "", append(args, as("operator")...)...), exitOK)
	}

	// A bank may not publish another bank's outcomes nor commands; the
	// operator may not publish commands either.
	for user, subjects := range map[string][]string{
		"bank-a":   {"saga.evt.bank-b.x", "saga.cmd.bank-a.x"},
		"operator": {"saga.cmd.bank-a.x", "saga.evt.bank-a.x"},
	} {
		nc, _ := connectAs(t, srv, user)
		denied := make(chan error, len(subjects))
		nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { denied <- err })
		for _, subj := range subjects {
			if err := nc.Publish(subj, []byte("{}")); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-denied:
				if !strings.Contains(err.Error(), "Permissions Violation") || !strings.Contains(err.Error(), subj) {
					t.Fatalf("publish %s as %s: %v", subj, user, err)
				}
			case <-time.After(waitTotal):
				t.Fatalf("%s published on %s without a permissions violation", user, subj)
			}
		}
	}

	for _, b := range []*bg{bankA, bankB, coord} {
		b.stop()
	}
}
